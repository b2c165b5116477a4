/* imchat web client: the admin console's page (/admin) — its tabs (dashboard, accounts, groups,
 * audit log) and the dashboard with the settings that change live. Only administrators reach
 * it (root.js checks `me.admin`; every /admin/ call is refused to anyone else anyway). */
(function () {
  'use strict';

  var api = IM.adminApi;

  function uptime(seconds) {
    var days = Math.floor(seconds / 86400);
    var hours = Math.floor((seconds % 86400) / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    return (days ? days + 'd ' : '') + hours + 'h ' + minutes + 'm';
  }

  IM.components = IM.components || {};
  IM.components.AdminConsole = {
    render: IM.templates['admin-console'],
    mixins: [IM.ui.i18nMixin],
    props: { me: { type: Object, required: true } },
    emits: ['go'],
    data: function () {
      return { tab: 'dashboard', dashboard: null, settings: null, busy: false };
    },
    created: function () { this.refresh(); },
    methods: {
      refresh: function () {
        var self = this;
        Promise.all([api.dashboard(), api.settings()]).then(function (answers) {
          self.dashboard = answers[0];
          self.settings = answers[1];
        }, function (error) { IM.ui.toast(error.message, 'error'); });
      },
      toggleRegistration: function () {
        var self = this;
        self.busy = true;
        api.setRegistration(!self.settings.registration_open).then(function (settings) {
          self.settings = settings;
          IM.ui.toast(settings.registration_open ? self.t('adminSignupOpened') : self.t('adminSignupClosed'), 'success');
        }, function (error) { IM.ui.toast(error.message, 'error'); }).then(function () { self.busy = false; });
      },
      bytes: function (size) { return IM.util.formatBytes(size); },
      uptime: uptime
    }
  };
})();
