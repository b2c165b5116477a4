/* imchat web client: the log-in and registration pages. Registration picks an avatar (one of
 * the built-in pictures, or an uploaded one: uploads need a session, so that picture is sent
 * to /attach/upload right after the account exists and then saved with /user/update). */
(function () {
  'use strict';

  var api = IM.util.api;
  var ui = IM.ui;

  var LoginPage = {
    template: '#tpl-login',
    mixins: [ui.i18nMixin],
    emits: ['logged-in', 'go'],
    data: function () { return { mobile: '', passwd: '', busy: false, error: '' }; },
    mounted: function () {
      var input = this.$el.querySelector('input[name=mobile]');
      if (input) input.focus();
    },
    methods: {
      submit: function () {
        var self = this;
        this.error = '';
        if (!this.mobile) { this.error = this.t('required', { field: this.t('mobile') }); return; }
        if (!this.passwd) { this.error = this.t('required', { field: this.t('password') }); return; }
        this.busy = true;
        api('/user/login', { mobile: this.mobile, passwd: this.passwd }).then(function (answer) {
          self.$emit('logged-in', answer.data);
        }, function (error) {
          self.error = error.message;
        }).then(function () { self.busy = false; });
      }
    }
  };

  var RegisterPage = {
    template: '#tpl-register',
    mixins: [ui.i18nMixin],
    emits: ['logged-in', 'go'],
    data: function () {
      return {
        mobile: '', passwd: '', nickname: '', sex: 'U',
        builtins: [], builtin: '', file: null, filePreview: '',
        busy: false, error: ''
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
        var file = event.target.files && event.target.files[0];
        event.target.value = '';
        if (!file) return;
        if (!/^image\/(png|jpeg|gif|webp)$/.test(file.type)) { ui.toast(this.t('onlyPictures'), 'error'); return; }
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
          return uploadAvatar(self.file).then(function (avatar) {
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

  /** Upload a picture and make it the logged-in user's avatar; resolves with its URL. */
  function uploadAvatar(file) {
    var form = new FormData();
    form.append('file', file);
    return api('/attach/upload', form).then(function (answer) {
      var url = answer.thumb && IM.util.safeMediaUrl(answer.thumb) ? answer.thumb : answer.data;
      return api('/user/update', { avatar: url }).then(function (saved) {
        return (saved.data && saved.data.avatar) || url;
      }, function (error) {
        if (error.status === 404 || error.status === 405) throw new IM.util.ApiError(IM.i18n.t('avatarNotSaved'), error.status);
        throw error;
      });
    });
  }

  window.IM = window.IM || {};
  window.IM.pages = { LoginPage: LoginPage, RegisterPage: RegisterPage, uploadAvatar: uploadAvatar };
})();
