/* imchat web client: the profile dialog's forms — my nickname, memo (a line about me) and sex,
 * and changing my password (the current one and a new one; my other sign-ins end). */
(function () {
  'use strict';

  var api = IM.util.api;

  IM.components = IM.components || {};
  IM.components.AccountForms = {
    render: IM.templates.account,
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () {
      var me = this.chat.state.me;
      return {
        profile: { nickname: me.nickname || '', memo: me.memo || '', sex: me.sex || 'U', busy: false, error: '' },
        password: { old: '', fresh: '', busy: false, error: '' },
        editing: ''   // '', 'profile' or 'password'
      };
    },
    methods: {
      saveProfile: function () {
        var self = this;
        var form = this.profile;
        form.busy = true;
        form.error = '';
        api('/user/update', { nickname: form.nickname, memo: form.memo, sex: form.sex }).then(function (answer) {
          self.chat.meChanged(Object.assign({}, self.chat.state.me, answer.data));
          IM.ui.toast(self.t('profileSaved'), 'success');
          self.editing = '';
        }, function (error) { form.error = error.message; }).then(function () { form.busy = false; });
      },

      changePassword: function () {
        var self = this;
        var form = this.password;
        form.busy = true;
        form.error = '';
        api('/user/password', { oldpasswd: form.old, newpasswd: form.fresh }).then(function () {
          IM.ui.toast(self.t('passwordChanged'), 'success');
          form.old = '';
          form.fresh = '';
          self.editing = '';
        }, function (error) { form.error = error.message; }).then(function () { form.busy = false; });
      }
    }
  };
})();
