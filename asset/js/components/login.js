/* imchat web client: the log-in page (/): mobile number and password; a good answer carries
 * the user and sets the session cookie. */
(function () {
  'use strict';

  var api = IM.util.api;
  var ui = IM.ui;

  IM.components = IM.components || {};
  IM.components.LoginPage = {
    render: IM.templates.login,
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
})();
