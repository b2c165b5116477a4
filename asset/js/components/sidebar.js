/* imchat web client: the sidebar — who I am and the connection state, the + menu (add a
 * friend, find people, create or join a group; a badge for friend requests waiting), the search
 * box, and the Chats / Contacts lists. */
(function () {
  'use strict';

  IM.components = IM.components || {};
  IM.components.Sidebar = {
    render: IM.templates.sidebar,
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () { return { CMD: IM.protocol.CMD, filter: '', plusOpen: false }; },
    computed: {
      me: function () { return this.chat.state.me; },
      view: function () { return this.chat.view; },
      online: function () { return this.chat.state.online; },
      conversations: function () { return this.view.conversationList(this.filter, this.chat.activeKey); },
      friends: function () { return this.view.friends(this.filter); },
      groups: function () { return this.view.groups(this.filter); },
      incoming: function () { return this.chat.people.state.incoming.length; },
      connLabel: function () {
        var state = this.chat.conn.state;
        if (state === 'online') return this.t('online');
        if (state === 'reconnecting') return this.t('reconnecting').split(/[.。，,]/)[0];
        return this.t('connecting');
      }
    },
    created: function () {
      var self = this;
      this.onDocClick = function () { self.plusOpen = false; };
      document.addEventListener('click', this.onDocClick);
    },
    unmounted: function () { document.removeEventListener('click', this.onDocClick); },
    methods: { shortTime: IM.util.shortTime }
  };
})();
