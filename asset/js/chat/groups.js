/* imchat web client: governing a group from the page — the /group/* requests (invite, remove,
 * leave, update, admins, hand-over, dissolve) and what a group notice (MEDIA.NOTICE) that
 * arrives changes on the page: the group list and member list are loaded again, and a group
 * the user left, was removed from or that was dissolved leaves the page. No DOM here. */
(function (IM) {
  'use strict';

  var api = IM.util.api;

  function createGroupActions(chat) {
    /** After a change: the groups (name, role, privacy) and this group's members again. */
    function reload(groupId) {
      return Promise.all([chat.loaders.groups(), chat.loaders.members(groupId).then(null, function () {})]);
    }

    function act(path, groupId, fields) {
      return api(path, Object.assign({ id: groupId }, fields || {})).then(function (answer) {
        return reload(groupId).then(function () { return answer; });
      });
    }

    /** The group is no longer the user's: forget its conversation and its members. */
    function forget(groupId) {
      var key = IM.protocol.CMD.GROUP + ':' + groupId;
      if (chat.activeKey === key) chat.closeConversation();
      delete chat.state.convs[key];
      delete chat.state.members[groupId];
      return chat.loaders.groups();
    }

    /** A notice arrived live: bring the page in step with the change. True when the group
     * is no longer the user's. */
    function applyNotice(msg) {
      var event = String(msg.memo || '').split(':')[0];
      var me = chat.state.me.id;
      var gone = event === 'dissolved' || (event === 'removed' && msg.amount === me) ||
        (event === 'left' && msg.userid === me);
      if (!gone) { reload(msg.dstid); return false; }
      var name = chat.view.convName({ cmd: IM.protocol.CMD.GROUP, dstid: msg.dstid });
      IM.ui.toast(chat.view.noticeText(msg) + ' · ' + name, 'info');
      forget(msg.dstid);
      return true;
    }

    return {
      invite: function (groupId, userId) { return act('/group/invite', groupId, { dstid: userId }); },
      remove: function (groupId, userId) { return act('/group/remove', groupId, { dstid: userId }); },
      setAdmin: function (groupId, userId, on) { return act('/group/admin', groupId, { dstid: userId, admin: on ? 1 : 0 }); },
      transfer: function (groupId, userId) { return act('/group/transfer', groupId, { dstid: userId }); },
      update: function (groupId, fields) { return act('/group/update', groupId, fields); },
      leave: function (groupId) { return api('/group/leave', { id: groupId }).then(function () { return forget(groupId); }); },
      dissolve: function (groupId) { return api('/group/dissolve', { id: groupId }).then(function () { return forget(groupId); }); },
      applyNotice: applyNotice
    };
  }

  IM.createGroupActions = createGroupActions;
})(globalThis.IM = globalThis.IM || {});
