/* imchat web client: the group dialogs an owner or admin opens from the member drawer —
 * invite friends who are not members yet, and the group's settings (name, notice, icon,
 * private or public). The requests are chat/groups.js's; the dialog shows their refusals. */
(function () {
  'use strict';

  function settingsOf(group) {
    return { name: group ? group.name : '', memo: group ? group.memo : '', icon: group ? group.icon : '', private: !!(group && group.private) };
  }

  IM.components = IM.components || {};
  IM.components.GroupDialogs = {
    render: IM.templates['group-dialogs'],
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () { return { filter: '', busy: false, error: '', form: settingsOf(null), accept: IM.upload.ACCEPT }; },
    computed: {
      groupId: function () { return this.chat.active ? this.chat.active.dstid : 0; },
      group: function () { return this.chat.active ? this.chat.store.groupOf(this.groupId) : null; },
      /** Friends not in the group yet, matching the filter. */
      candidates: function () {
        var members = this.chat.state.members[this.groupId] || [];
        var inGroup = {};
        members.forEach(function (m) { inGroup[m.id] = true; });
        return this.chat.view.friends(this.filter).filter(function (f) { return !inGroup[f.id]; });
      }
    },
    watch: {
      'chat.dialog': function () {
        this.filter = '';
        this.error = '';
        this.form = settingsOf(this.group);
      }
    },
    methods: {
      close: function () { this.chat.dialog = null; },
      attempt: function (request) {
        var self = this;
        this.busy = true;
        this.error = '';
        return request().then(null, function (error) { self.error = error.message; })
          .then(function () { self.busy = false; });
      },
      invite: function (friend) {
        var self = this;
        this.attempt(function () {
          return self.chat.groups.invite(self.groupId, friend.id).then(function () {
            IM.ui.toast(self.t('memberAdded', { name: friend.nickname || friend.mobile }), 'success');
          });
        });
      },
      pickIcon: function (event) {
        var self = this;
        var file = IM.upload.pickedFile(event);
        if (!file) return;
        IM.upload.uploadPicture(file).then(function (picture) {
          self.form.icon = picture.thumb || picture.url;
        }, function (error) { self.error = error.message; });
      },
      /** Only the fields that changed: each change is a notice in the conversation. */
      save: function () {
        var self = this;
        var group = this.group;
        var changed = {};
        if (this.form.name !== group.name) changed.name = this.form.name;
        if (this.form.memo !== group.memo) changed.memo = this.form.memo;
        if (this.form.icon !== group.icon) changed.icon = this.form.icon;
        if (this.form.private !== !!group.private) changed.private = this.form.private ? 1 : 0;
        if (!Object.keys(changed).length) { this.close(); return; }
        this.attempt(function () {
          return self.chat.groups.update(self.groupId, changed).then(function () {
            self.close();
            IM.ui.toast(self.t('groupSaved'), 'success');
          });
        });
      }
    }
  };
})();
