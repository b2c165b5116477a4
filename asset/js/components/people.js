/* imchat web client: the people dialog — find people in the directory (by name, Chinese or
 * Latin, or a whole mobile number) and ask them to be friends; answer friend requests (accept,
 * decline) and withdraw my own; see and unblock the people I blocked. Its lists are the chat's
 * `people` (chat/people.js); the search box and results are kept here. */
(function () {
  'use strict';

  var CMD = IM.protocol.CMD;
  var SEARCH_DELAY_MS = 250;

  IM.components = IM.components || {};
  IM.components.People = {
    render: IM.templates.people,
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    props: { start: { type: String, default: 'find' } },
    data: function () {
      return { tab: this.start, q: '', rows: [], total: 0, searched: false, busy: false, error: '', off: false };
    },
    computed: {
      people: function () { return this.chat.people.state; },
      me: function () { return this.chat.state.me; }
    },
    watch: {
      q: function () {
        var self = this;
        clearTimeout(this.timer);
        this.timer = setTimeout(function () { self.search(0); }, SEARCH_DELAY_MS);
      }
    },
    created: function () {
      if (this.tab === 'find') this.search(0);
      this.chat.people.requests();
      this.chat.people.blocked();
    },
    unmounted: function () { clearTimeout(this.timer); },
    methods: {
      close: function () { this.chat.dialog = null; },

      search: function (offset) {
        var self = this;
        var asked = this.q.trim();
        this.error = '';
        this.chat.people.directory(asked, offset).then(function (page) {
          if (asked !== self.q.trim()) return;
          self.rows = offset ? self.rows.concat(page.rows) : page.rows;
          self.total = page.total;
          self.searched = true;
        }, function (error) {
          self.off = error.status === 403;
          self.error = error.message;
          self.searched = true;
        });
      },

      /** Run one action on a person; its error is shown in the dialog, the lists reload and
       * the person's row says how they relate to me now (`relation` after the action). */
      act: function (action, person, relation) {
        var self = this;
        this.busy = true;
        this.error = '';
        return action(person.id).then(function (result) {
          var now = typeof relation === 'function' ? relation(result) : relation;
          self.rows.forEach(function (row) { if (row.id === person.id) row.relation = now; });
          return result;
        }, function (error) { self.error = error.message; })
          .then(function (result) { self.busy = false; return result; });
      },

      add: function (person) {
        var self = this;
        this.act(this.chat.people.request, person, function (pending) { return pending ? 'requested' : 'friend'; }).then(function (pending) {
          if (pending === undefined) return;
          var name = { name: person.nickname || person.mobile };
          IM.ui.toast(pending ? self.t('requestSent', name) : self.t('friendAdded', name), 'success');
        });
      },

      accept: function (person) {
        var self = this;
        this.act(this.chat.people.accept, person, 'friend').then(function () {
          IM.ui.toast(self.t('friendAdded', { name: person.nickname || person.mobile }), 'success');
        });
      },

      decline: function (person) { this.act(this.chat.people.decline, person, ''); },
      cancel: function (person) { this.act(this.chat.people.cancel, person, ''); },
      unblock: function (person) { this.act(this.chat.people.unblock, person, ''); },

      message: function (person) {
        this.close();
        this.chat.openConversation(CMD.SINGLE, person.id);
      }
    }
  };
})();
