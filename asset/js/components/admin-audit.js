/* imchat web client: the admin console's audit tab — the log newest first, filtered by action,
 * text, outcome and days, paged back with "more", and downloaded as CSV with the same filters. */
(function () {
  'use strict';

  var api = IM.adminApi;

  IM.components = IM.components || {};
  IM.components.AdminAudit = {
    render: IM.templates['admin-audit'],
    mixins: [IM.ui.i18nMixin],
    data: function () {
      return { filters: { action: '', q: '', success: '', since: '', until: '' }, rows: [], actions: [], more: false };
    },
    computed: {
      csvUrl: function () { return api.auditCsvUrl(this.filters); }
    },
    created: function () { this.load(); },
    methods: {
      load: function (more) {
        var self = this;
        var before = more && self.rows.length ? self.rows[self.rows.length - 1].id : '';
        api.audit(self.filters, before).then(function (answer) {
          self.rows = more ? self.rows.concat(answer.rows) : answer.rows;
          self.actions = answer.actions;
          self.more = answer.rows.length === api.PAGE;
        }, function (error) { IM.ui.toast(error.message, 'error'); });
      },
      when: function (ms) { return new Date(ms).toLocaleString(); }
    }
  };
})();
