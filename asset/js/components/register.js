/* imchat web client: the registration page (/register). An avatar is one of the built-in
 * pictures, or an uploaded one: uploads need a session, so that picture is sent right after the
 * account exists and then saved with /user/update (IM.upload.uploadAvatar). */
(function () {
  'use strict';

  var api = IM.util.api;
  var ui = IM.ui;

  IM.components = IM.components || {};
  IM.components.RegisterPage = {
    render: IM.templates.register,
    mixins: [ui.i18nMixin],
    emits: ['logged-in', 'go'],
    data: function () {
      return {
        mobile: '', passwd: '', nickname: '', sex: 'U',
        builtins: [], builtin: '', file: null, filePreview: '',
        busy: false, error: '', accept: IM.upload.ACCEPT
      };
    },
    computed: {
      avatarPreview: function () { return this.filePreview || this.builtin; },
      placeholderColor: function () { return IM.util.colorFor(this.mobile || this.nickname); },
      placeholderLetters: function () { return IM.util.initials(this.nickname || this.mobile || '?'); }
    },
    created: function () {
      var self = this;
      fetch('/asset/img/avatar/index.json', { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.json() : { avatars: [] }; })
        .then(function (index) {
          self.builtins = (index.avatars || []).map(function (name) { return '/asset/img/avatar/' + name; })
            .filter(IM.util.safeMediaUrl);
        }, function () { /* no built-in avatars: upload still works */ });
    },
    unmounted: function () { if (this.filePreview) URL.revokeObjectURL(this.filePreview); },
    methods: {
      chooseBuiltin: function (url) {
        this.builtin = url;
        this.clearFile();
      },
      clearFile: function () {
        if (this.filePreview) URL.revokeObjectURL(this.filePreview);
        this.file = null;
        this.filePreview = '';
      },
      pickFile: function (event) {
        var file = IM.upload.pickedFile(event);
        if (!file) return;
        if (!IM.upload.accepts(file)) { ui.toast(this.t('onlyPictures'), 'error'); return; }
        this.clearFile();
        this.file = file;
        this.filePreview = URL.createObjectURL(file);
      },
      submit: function () {
        var self = this;
        this.error = '';
        if (!this.mobile) { this.error = this.t('required', { field: this.t('mobile') }); return; }
        if (this.passwd.length < 6) { this.error = this.t('passwordHint'); return; }
        this.busy = true;
        var body = { mobile: this.mobile, passwd: this.passwd, nickname: this.nickname, sex: this.sex, avatar: this.file ? '' : this.builtin };
        api('/user/register', body).then(function (answer) {
          var user = answer.data;
          if (!self.file) return user;
          return IM.upload.uploadAvatar(self.file).then(function (avatar) {
            user.avatar = avatar;
            return user;
          }, function (error) {
            ui.toast(error.message, 'error');
            return user;
          });
        }).then(function (user) {
          if (user) self.$emit('logged-in', user);
        }, function (error) {
          self.error = error.message;
        }).then(function () { self.busy = false; });
      }
    }
  };
})();
