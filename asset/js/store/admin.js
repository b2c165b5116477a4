/* imchat web client: the admin console's calls to /admin/... (no DOM, no Vue). Each resolves
 * with what the console shows, or rejects with the server's message (IM.util.ApiError). */
(function () {
  'use strict';

  var util = IM.util;
  var PAGE = 50;

  function rowsOf(envelope) { return { rows: envelope.rows, total: envelope.total }; }

  function userAction(id, action, body) {
    return util.api('/admin/users/' + encodeURIComponent(id) + '/' + action, body || {});
  }

  /** When a date input's day (YYYY-MM-DD) starts, local time, in ms; '' for none. */
  function dayStart(day) {
    if (!day) return '';
    var parts = day.split('-').map(Number);
    return new Date(parts[0], parts[1] - 1, parts[2]).getTime();
  }

  /** The audit query of the console's filter form (`until` is inclusive of its day). */
  function auditQuery(filters) {
    var until = dayStart(filters.until);
    return {
      action: filters.action, q: filters.q, success: filters.success,
      since: dayStart(filters.since), until: until === '' ? '' : until + 86400000
    };
  }

  IM.adminApi = {
    PAGE: PAGE,
    dashboard: function () { return util.apiGet('/admin/dashboard').then(function (e) { return e.data; }); },
    users: function (q, offset) {
      return util.apiGet('/admin/users', { q: q, offset: offset, limit: PAGE }).then(rowsOf);
    },
    createUser: function (form) {
      return util.api('/admin/users', { mobile: form.mobile, passwd: form.passwd,
        nickname: form.nickname, admin: form.admin ? 1 : 0 });
    },
    setDisabled: function (id, disabled) { return userAction(id, disabled ? 'disable' : 'enable'); },
    setAdmin: function (id, admin) { return userAction(id, 'admin', { admin: admin ? 1 : 0 }); },
    resetPassword: function (id, passwd) { return userAction(id, 'password', { passwd: passwd }); },
    signOut: function (id) { return userAction(id, 'sign-out'); },
    groups: function (q, offset) {
      return util.apiGet('/admin/groups', { q: q, offset: offset, limit: PAGE }).then(rowsOf);
    },
    members: function (groupId) {
      return util.apiGet('/admin/groups/' + encodeURIComponent(groupId) + '/members').then(rowsOf);
    },
    transfer: function (groupId, owner) {
      return util.api('/admin/groups/' + encodeURIComponent(groupId) + '/transfer', { owner: owner });
    },
    dissolve: function (groupId) {
      return util.api('/admin/groups/' + encodeURIComponent(groupId) + '/dissolve', {});
    },
    groupExportUrl: function (groupId) {
      return util.withQuery('/admin/export', { cmd: IM.protocol.CMD.GROUP, dstid: groupId });
    },
    settings: function () { return util.apiGet('/admin/settings').then(function (e) { return e.data; }); },
    setRegistration: function (open) {
      return util.api('/admin/settings', { registration_open: open ? 1 : 0 }).then(function (e) { return e.data; });
    },
    audit: function (filters, before) {
      var query = Object.assign(auditQuery(filters), { before: before, limit: PAGE });
      return util.apiGet('/admin/audit', query);
    },
    auditCsvUrl: function (filters) { return util.withQuery('/admin/audit.csv', auditQuery(filters)); }
  };
})();
