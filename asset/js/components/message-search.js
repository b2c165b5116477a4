/* imchat web client: message search in the sidebar — the query box, everywhere or within one
 * conversation, the results grouped by conversation with the match highlighted (as text: the
 * server's offsets cut the content into plain and marked pieces, never HTML), more results on
 * request, and a click that opens the conversation at that message. The requests and the state
 * are the chat app's (chat.search, chat.runSearch, chat.openAt). */
(function () {
  'use strict';

  var CMD = IM.protocol.CMD;
  var CONTEXT = 24;   // characters of context shown on each side of the first match

  /** The content as [{text, hit}] pieces; long text is cut around the first match. */
  function pieces(msg) {
    var chars = Array.from(msg.content || '');   // offsets count code points, not UTF-16 units
    var spans = (msg.match || []).filter(function (s) { return s[0] < s[1] && s[1] <= chars.length; });
    var from = spans.length ? Math.max(0, spans[0][0] - CONTEXT) : 0;
    var to = Math.min(chars.length, from + 2 * CONTEXT + 40);
    var out = [];
    var at = from;
    if (from > 0) out.push({ text: '…', hit: false });
    spans.forEach(function (span) {
      var start = Math.max(span[0], at);
      var end = Math.min(span[1], to);
      if (start >= end) return;
      if (start > at) out.push({ text: chars.slice(at, start).join(''), hit: false });
      out.push({ text: chars.slice(start, end).join(''), hit: true });
      at = end;
    });
    if (at < to) out.push({ text: chars.slice(at, to).join(''), hit: false });
    if (to < chars.length) out.push({ text: '…', hit: false });
    return out;
  }

  IM.components = IM.components || {};
  IM.components.MessageSearch = {
    render: IM.templates['message-search'],
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () { return { CMD: CMD }; },
    computed: {
      search: function () { return this.chat.search; },
      view: function () { return this.chat.view; },
      scopeName: function () {
        var scope = this.search.scope;
        return scope ? this.view.convName(scope) : '';
      },
      /** The results by conversation, in the order of each conversation's best result. */
      groups: function () {
        var me = this.chat.me.id;
        var byKey = {};
        var order = [];
        this.search.rows.forEach(function (msg) {
          // A one-to-one message belongs to the conversation with the other person.
          var dstid = msg.cmd === CMD.SINGLE && msg.userid !== me ? msg.userid : msg.dstid;
          var key = msg.cmd + ':' + dstid;
          if (!byKey[key]) {
            byKey[key] = { key: key, cmd: msg.cmd, dstid: dstid, rows: [] };
            order.push(byKey[key]);
          }
          byKey[key].rows.push(msg);
        });
        return order;
      }
    },
    mounted: function () { if (this.$refs.input) this.$refs.input.focus(); },
    methods: {
      pieces: pieces,
      shortTime: IM.util.shortTime,
      convName: function (group) { return this.view.convName(group); },
      submit: function () { this.chat.runSearch(false); },
      everywhere: function () { this.chat.openSearch(null); }
    }
  };
})();
