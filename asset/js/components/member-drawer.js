/* imchat web client: the member drawer beside a group conversation — who is in the group with
 * their role, who of them is online, a shortcut to a one-to-one chat with a member who is a
 * friend, and the group's governance: owners and admins invite, remove, open the settings;
 * the owner makes admins, hands over and dissolves; members leave. The server decides; the
 * buttons only follow the user's role. */
(function () {
  'use strict';

  IM.components = IM.components || {};
  IM.components.MemberDrawer = {
    render: IM.templates['member-drawer'],
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () { return { CMD: IM.protocol.CMD, confirm: null }; },
    computed: {
      me: function () { return this.chat.state.me; },
      groupId: function () { return this.chat.active.dstid; },
      group: function () { return this.chat.store.groupOf(this.groupId); },
      members: function () { return this.chat.state.members[this.groupId] || []; },
      role: function () { return this.group ? this.group.role : ''; },
      isOwner: function () { return this.role === 'owner'; },
      manager: function () { return this.role === 'owner' || this.role === 'admin'; }
    },
    methods: {
      isOnline: function (member) {
        if (member.id === this.me.id) return this.chat.conn.state === 'online';
        return !!this.chat.state.online[member.id] || !!member.online;
      },
      roleLabel: function (role) { return role === 'owner' ? this.t('roleOwner') : this.t('roleAdmin'); },
      name: function (member) { return member.nickname || member.mobile || '#' + member.id; },
      /** The owner removes anyone but themselves; an admin plain members only. */
      canRemove: function (member) {
        if (member.role === 'owner') return false;
        return this.isOwner || (this.role === 'admin' && member.role !== 'admin');
      },
      /** Do `action` (a request), after the person confirmed `question` when there is one. */
      run: function (question, label, action) {
        if (question) { this.confirm = { text: question, label: label, action: action }; return; }
        action().then(null, function (error) { IM.ui.toast(error.message, 'error'); });
      },
      confirmed: function () {
        var action = this.confirm.action;
        this.confirm = null;
        this.run('', '', action);
      },
      remove: function (member) {
        var self = this;
        this.run(this.t('confirmRemoveMember', { name: this.name(member) }), this.t('removeMember'), function () {
          return self.chat.groups.remove(self.groupId, member.id);
        });
      },
      setAdmin: function (member) {
        var self = this;
        this.run('', '', function () { return self.chat.groups.setAdmin(self.groupId, member.id, member.role !== 'admin'); });
      },
      transfer: function (member) {
        var self = this;
        this.run(this.t('confirmTransfer', { name: this.name(member) }), this.t('transferOwner'), function () {
          return self.chat.groups.transfer(self.groupId, member.id);
        });
      },
      leave: function () {
        var self = this;
        this.run(this.t('confirmLeave', { name: this.group.name }), this.t('leaveGroup'), function () { return self.chat.groups.leave(self.groupId); });
      },
      dissolve: function () {
        var self = this;
        this.run(this.t('confirmDissolve', { name: this.group.name }), this.t('dissolveGroup'), function () { return self.chat.groups.dissolve(self.groupId); });
      }
    }
  };
})();
