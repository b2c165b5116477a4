/* imchat web client: the profile dialog — who I am, changing my avatar, my nickname, memo, sex
 * and password (components/account.js), the language, turning on desktop notifications, and
 * logging out. */
(function () {
  'use strict';

  function permissionNow() {
    return typeof Notification === 'undefined' ? 'unsupported' : Notification.permission;
  }

  IM.components = IM.components || {};
  IM.components.Profile = {
    render: IM.templates.profile,
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () { return { permission: permissionNow(), accept: IM.upload.ACCEPT }; },
    computed: {
      me: function () { return this.chat.state.me; }
    },
    methods: {
      changeAvatar: function (event) {
        var self = this;
        var file = IM.upload.pickedFile(event);
        if (!file) return;
        IM.upload.uploadAvatar(file).then(function (avatar) {
          self.chat.meChanged(Object.assign({}, self.me, { avatar: avatar }));
          IM.ui.toast(self.t('avatarSaved'), 'success');
        }, function (error) { IM.ui.toast(error.message, 'error'); });
      },

      askNotifications: function () {
        var self = this;
        if (typeof Notification === 'undefined') return;
        Promise.resolve(Notification.requestPermission()).then(function (permission) {
          self.permission = permission;
        });
      }
    }
  };
})();
