/* imchat web client: what the chat loads over HTTP into the store — friends, groups, recent
 * conversations (and from them the sync point), group members, read receipts, a conversation's
 * history page by page, unknown users, and the sticker packs. Each returns a promise; errors
 * that matter to the person are passed on, the rest are absorbed here. */
(function () {
  'use strict';

  var api = IM.util.api;
  var util = IM.util;
  var HISTORY_PAGE = 30;
  var STICKER_BASE = '/asset/plugins/doutu/';

  function createLoaders(store) {
    var userRequests = {};   // id -> promise of /user/find, asked once

    function friends() {
      return api('/contact/loadfriend', {}).then(function (answer) { store.setFriends(answer.rows); });
    }

    function groups() {
      return api('/contact/loadcommunity', {}).then(function (answer) { store.setGroups(answer.rows); });
    }

    function user(id) {
      if (!id || store.state.users[id] || userRequests[id]) return;
      userRequests[id] = api('/user/find', { id: id }).then(function (answer) {
        store.rememberUser(answer.data);
      }, function () { /* unknown user: shown by number */ });
    }

    /** The recent conversations; resolves with the newest message id (the sync point). */
    function conversations() {
      return api('/message/conversations', {}).then(function (answer) {
        var outcome = store.applyConversations(answer.rows);
        outcome.users.forEach(user);
        return outcome.newest;
      }, function (error) {
        if (error.status === 404) return 0;   // a server without history: live messages only
        throw error;
      });
    }

    /** Muted conversations (also those with no message yet), as every device sees them. */
    function mutes() {
      return api('/message/mutes', {}).then(function (answer) {
        (answer.rows || []).forEach(function (row) { store.ensureConv(row.cmd, row.dstid).muted = true; });
      }, function () { /* an older server: nothing is muted */ });
    }

    function members(groupId) {
      return api('/contact/members', { id: groupId }).then(function (answer) {
        store.setMembers(groupId, answer.rows || []);
      });
    }

    function receipts(conv) {
      return api('/message/receipts', { cmd: conv.cmd, dstid: conv.dstid }).then(function (answer) {
        store.applyReceipts(conv, answer.rows);
      }, function () { /* receipts are a nicety */ });
    }

    /** One page of history: the newest (initial) or the one before the oldest shown. */
    function history(conv, initial) {
      if (conv.loading || (!initial && !conv.hasMore)) return Promise.resolve();
      var body = { cmd: conv.cmd, dstid: conv.dstid, limit: HISTORY_PAGE };
      var oldest = store.oldestId(conv);
      if (!initial && oldest) body.before = oldest;
      conv.loading = true;
      return api('/message/history', body).then(function (answer) {
        var rows = answer.rows || [];
        rows.forEach(function (msg) {
          store.addMessage(msg);
          user(msg.userid);
        });
        // A page of large messages may be cut short by the server (`more`).
        conv.hasMore = rows.length >= HISTORY_PAGE || answer.more === true;
        conv.loaded = true;
      }, function (error) {
        conv.loaded = true;
        conv.hasMore = false;
        if (error.status !== 404) throw error;
      }).finally(function () { conv.loading = false; });
    }

    /** The page of history around message `id` (both sides), in place of what was loaded:
     * the conversation then shows no hole between this page and an older newest page. */
    function around(conv, id) {
      conv.loading = true;
      return api('/message/history', { cmd: conv.cmd, dstid: conv.dstid, around: id, limit: HISTORY_PAGE }).then(function (answer) {
        var rows = answer.rows || [];
        store.replaceMessages(conv, rows);
        rows.forEach(function (msg) { user(msg.userid); });
        conv.hasMore = true;
        conv.loaded = true;
        // Newer messages than the page exist: the pane offers to jump to the latest.
        // (Entries that change messages move lastId, not the newest message.)
        conv.gapAfter = rows.length > 0 && rows[rows.length - 1].id < (conv.last ? conv.last.id : conv.lastId);
      }).finally(function () { conv.loading = false; });
    }

    /** One page of message search: scope null (everywhere) or {cmd, dstid}; `before` pages on. */
    function search(q, scope, before) {
      var body = { q: q };
      if (scope) { body.cmd = scope.cmd; body.dstid = scope.dstid; }
      if (before) body.before = before;
      return api('/message/search', body).then(function (answer) {
        (answer.rows || []).forEach(function (msg) { user(msg.userid); });
        return answer;
      });
    }

    function getJson(url, fallback) {
      return fetch(url, { credentials: 'same-origin' }).then(function (r) { return r.ok ? r.json() : fallback; });
    }

    /** The sticker packs under /asset/plugins/doutu/: [{id, icon, assets[]}]. */
    function stickers() {
      return getJson(STICKER_BASE + 'index.json', { pkgids: [] }).then(function (index) {
        var ids = (index.pkgids || []).filter(function (id) { return /^[A-Za-z0-9_-]+$/.test(id); });
        return Promise.all(ids.map(function (id) {
          return getJson(STICKER_BASE + id + '/info.json', null).then(function (info) {
            // The article's pack format: {id, icon, assets[]}, files relative to the pack.
            if (!info || !Array.isArray(info.assets)) return null;
            var base = STICKER_BASE + id + '/';
            return {
              id: id,
              icon: util.safeMediaUrl(base + info.icon) || '',
              assets: info.assets.map(function (name) { return util.safeMediaUrl(base + name); }).filter(Boolean)
            };
          }, function () { return null; });
        }));
      }).then(function (packs) { return (packs || []).filter(Boolean); }, function () { return []; });
    }

    return {
      friends: friends, groups: groups, user: user, conversations: conversations, members: members,
      receipts: receipts, history: history, stickers: stickers, around: around, search: search,
      mutes: mutes
    };
  }

  window.IM = window.IM || {};
  window.IM.createLoaders = createLoaders;
})();
