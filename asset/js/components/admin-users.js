/* imchat web client: the admin console's accounts tab — find accounts, create one, and per
 * account disable/enable, set a new password, sign out everywhere, grant or revoke the admin
 * role. Each action is one /admin/ call; the row is then reloaded from the server. */
(function () {
  'use strict';

  var api = IM.adminApi;

  function emptyForm() { return { mobile: '', nickname: '', passwd: '', admin: false, error: '', busy: false }; }

  IM.components = IM.components || {};
  IM.components.AdminUsers = {
    render: IM.templates['admin-users'],
    mixins: [IM.ui.i18nMixin],
    props: { me: { type: Object, required: true } },
    data: function () {
      return { q: '', rows: [], total: 0, dialog: '', target: null, form: emptyForm() };
    },
    created: function () { this.search(); },
    methods: {
      search: function (more) {
        var self = this;
        var offset = more ? self.rows.length : 0;
        api.users(self.q, offset).then(function (page) {
          self.rows = more ? self.rows.concat(page.rows) : page.rows;
          self.total = page.total;
        }, function (error) { IM.ui.toast(error.message, 'error'); });
      },
      act: function (call, done) {
        var self = this;
        return call.then(function () {
          IM.ui.toast(done, 'success');
          self.search();
        }, function (error) { IM.ui.toast(error.message, 'error'); });
      },
      setDisabled: function (user, disabled) {
        this.act(api.setDisabled(user.id, disabled), disabled ? this.t('adminDisabledDone') : this.t('adminEnabledDone'));
      },
      setAdmin: function (user, admin) {
        this.act(api.setAdmin(user.id, admin), admin ? this.t('adminGrantedDone') : this.t('adminRevokedDone'));
      },
      signOut: function (user) { this.act(api.signOut(user.id), this.t('adminSignedOutDone')); },
      open: function (dialog, user) {
        this.form = emptyForm();
        this.target = user || null;
        this.dialog = dialog;
      },
      close: function () { this.dialog = ''; },
      submit: function () {
        var self = this;
        var form = self.form;
        form.busy = true;
        form.error = '';
        var call = self.dialog === 'create' ? api.createUser(form)
          : api.resetPassword(self.target.id, form.passwd);
        call.then(function () {
          IM.ui.toast(self.dialog === 'create' ? self.t('adminCreatedDone') : self.t('adminPasswordDone'), 'success');
          self.close();
          self.search();
        }, function (error) { form.error = error.message; }).then(function () { form.busy = false; });
      }
    }
  };
})();
