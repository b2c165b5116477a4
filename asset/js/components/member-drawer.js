/* imchat web client: the member drawer beside a group conversation — who is in the group,
 * who of them is online, and a shortcut to a one-to-one chat with a member who is a friend. */
(function () {
  'use strict';

  IM.components = IM.components || {};
  IM.components.MemberDrawer = {
    render: IM.templates['member-drawer'],
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () { return { CMD: IM.protocol.CMD }; },
    computed: {
      me: function () { return this.chat.state.me; },
      group: function () { return this.chat.store.groupOf(this.chat.active.dstid); },
      members: function () { return this.chat.state.members[this.chat.active.dstid] || []; }
    },
    methods: {
      isOnline: function (member) {
        if (member.id === this.me.id) return this.chat.conn.state === 'online';
        return !!this.chat.state.online[member.id] || !!member.online;
      }
    }
  };
})();
