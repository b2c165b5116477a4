/* imchat web client: the open conversation — its title, presence or typing line, the mute
 * toggle, the message list (time separators, bubbles, stickers, pictures, voice clips, send and
 * read states), loading older history as the user scrolls up, and keeping the newest message
 * in view. The composer below it is its own component; a message's menu (reply, react, edit,
 * recall), its quote, reactions, "edited" mark and recalled notice act through chat/actions.js. */
(function () {
  'use strict';

  var CMD = IM.protocol.CMD;

  function clock(ms) {
    if (!ms) return '';
    var d = new Date(ms);
    return (d.getHours() < 10 ? '0' : '') + d.getHours() + ':' + (d.getMinutes() < 10 ? '0' : '') + d.getMinutes();
  }

  IM.components = IM.components || {};
  IM.components.MessagePane = {
    render: IM.templates['message-pane'],
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () { return { newBelow: false, foundId: 0, reactions: IM.protocol.REACTIONS }; },
    computed: {
      conv: function () { return this.chat.active; },
      view: function () { return this.chat.view; },
      online: function () { return this.chat.state.online; },
      isGroup: function () { return this.conv.cmd === CMD.GROUP; },
      members: function () { return this.chat.state.members[this.conv.dstid]; },
      typing: function () { return this.view.typingText(this.conv, this.chat.now); },
      rows: function () { return this.view.rows(this.conv, this.chat.now); }
    },
    watch: {
      'chat.activeKey': function () { this.newBelow = false; }
    },
    methods: {
      dayTime: IM.util.dayTime,
      clock: clock,

      onScroll: function () {
        var el = this.$refs.scroller;
        var conv = this.conv;
        if (!el) return;
        if (el.scrollHeight - el.scrollTop - el.clientHeight < 60) this.newBelow = false;
        if (el.scrollTop < 80 && conv.hasMore && !conv.loading && conv.loaded) {
          var before = el.scrollHeight - el.scrollTop;
          var self = this;
          this.chat.loadHistory(conv, false).then(function () {
            self.$nextTick(function () { el.scrollTop = el.scrollHeight - before; });
          });
        }
      },

      /** Short pages leave nothing to scroll: load older messages until the pane is full. */
      fillViewport: function (conv) {
        var el = this.$refs.scroller;
        var self = this;
        if (!el || conv !== this.conv || !conv.hasMore || conv.loading) return;
        if (el.scrollHeight > el.clientHeight + 80) return;
        this.chat.loadHistory(conv, false).then(function () {
          self.$nextTick(function () {
            self.scrollToBottom(false);
            self.fillViewport(conv);
          });
        });
      },

      scrollToBottom: function (smooth) {
        var el = this.$refs.scroller;
        if (!el) return;
        this.newBelow = false;
        el.scrollTo({ top: el.scrollHeight, behavior: smooth ? 'smooth' : 'auto' });
      },

      /** A message arrived in this conversation: follow it unless the user scrolled up. */
      afterNewMessage: function (mine) {
        var el = this.$refs.scroller;
        var self = this;
        if (!el) return;
        var nearBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 120;
        this.$nextTick(function () {
          if (mine || nearBottom) self.scrollToBottom(false);
          else self.newBelow = true;
        });
      },

      /** Opened at a search result: bring that message into view and mark it for a while. */
      showMessage: function (id) {
        var el = this.$refs.scroller;
        var target = el && el.querySelector('[data-id="' + Number(id) + '"]');
        if (!target) return;
        var self = this;
        this.foundId = id;
        target.scrollIntoView({ block: 'center' });
        clearTimeout(this.foundTimer);
        this.foundTimer = setTimeout(function () { self.foundId = 0; }, 4000);
      },

      /** Just opened: show the newest, fill the pane, and put the cursor in the composer. */
      opened: function (conv) {
        this.scrollToBottom(false);
        this.fillViewport(conv);
        if (this.$refs.composer && !IM.ui.isPhone()) this.$refs.composer.focus();
      }
    }
  };
})();
