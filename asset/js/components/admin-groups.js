/* imchat web client: the admin console's groups tab — find groups, see a group's members, make
 * a member the owner, dissolve a group (after a confirmation), and download the group's export
 * archive (a plain link: the browser saves the zip). */
(function () {
  'use strict';

  var api = IM.adminApi;

  IM.components = IM.components || {};
  IM.components.AdminGroups = {
    render: IM.templates['admin-groups'],
    mixins: [IM.ui.i18nMixin],
    data: function () {
      return { q: '', rows: [], total: 0, open: null, members: [], owner: '', dissolving: null, busy: false };
    },
    created: function () { this.search(); },
    methods: {
      search: function (more) {
        var self = this;
        api.groups(self.q, more ? self.rows.length : 0).then(function (page) {
          self.rows = more ? self.rows.concat(page.rows) : page.rows;
          self.total = page.total;
        }, function (error) { IM.ui.toast(error.message, 'error'); });
      },
      toggle: function (group) {
        var self = this;
        if (self.open === group.id) { self.open = null; return; }
        api.members(group.id).then(function (page) {
          self.open = group.id;
          self.members = page.rows;
          self.owner = String(group.ownerid);
        }, function (error) { IM.ui.toast(error.message, 'error'); });
      },
      transfer: function (group) {
        var self = this;
        api.transfer(group.id, Number(self.owner)).then(function () {
          IM.ui.toast(self.t('adminOwnerDone'), 'success');
          group.ownerid = Number(self.owner);
        }, function (error) { IM.ui.toast(error.message, 'error'); });
      },
      dissolve: function (group) {
        var self = this;
        self.busy = true;
        api.dissolve(group.id).then(function () {
          IM.ui.toast(self.t('adminDissolvedDone'), 'success');
          self.dissolving = null;
          if (self.open === group.id) self.open = null;
          self.rows = self.rows.filter(function (row) { return row.id !== group.id; });
          self.total -= 1;
        }, function (error) { IM.ui.toast(error.message, 'error'); }).then(function () { self.busy = false; });
      },
      exportUrl: function (group) { return api.groupExportUrl(group.id); }
    }
  };
})();
