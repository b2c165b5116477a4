/* imchat web client: people — the directory search, friend requests (incoming to answer,
 * outgoing waiting), removing a friend, blocking and unblocking. Holds the lists it loads in a
 * reactive `state`; every change goes to the server first and the lists are reloaded from its
 * answer (the server also tells every device with a `contacts` frame, see `changed`). No DOM. */
(function () {
  'use strict';

  var api = IM.util.api;

  /** store: the chat's store (friends, users); loaders: the chat's loaders; reactive: Vue's. */
  function createPeople(store, loaders, reactive) {
    var state = reactive({ incoming: [], outgoing: [], blocked: [], loaded: false });

    function requests() {
      return api('/contact/requests', {}).then(function (answer) {
        var data = answer.data || {};
        state.incoming = data.incoming || [];
        state.outgoing = data.outgoing || [];
        state.incoming.concat(state.outgoing).forEach(store.rememberUser);
        state.loaded = true;
      }, function () { /* an older server: no requests */ });
    }

    function blocked() {
      return api('/contact/blocked', {}).then(function (answer) { state.blocked = answer.rows || []; },
        function () { /* an older server: no blocks */ });
    }

    /** A `contacts` frame: reload what it says changed. */
    function changed(what) {
      if (what === 'friends') return Promise.all([loaders.friends(), requests()]);
      if (what === 'blocks') return Promise.all([blocked(), loaders.friends()]);
      return requests();
    }

    /** One page of the directory: resolves with {rows, total}. */
    function directory(q, offset) {
      return api('/contact/directory', { q: q, offset: offset || 0, limit: 20 }).then(function (answer) {
        (answer.rows || []).forEach(store.rememberUser);
        return { rows: answer.rows || [], total: answer.total || 0 };
      });
    }

    /** Ask user `id` to be friends; resolves with true when a request now waits for them. */
    function request(id, memo) {
      return api('/contact/request', { id: id, memo: memo || '' }).then(function (answer) {
        return (answer.pending ? requests() : changed('friends')).then(function () { return !!answer.pending; });
      });
    }

    function answer(id, accept) {
      return api(accept ? '/contact/accept' : '/contact/decline', { id: id }).then(function () { return changed('friends'); });
    }

    function cancel(id) { return api('/contact/cancelrequest', { id: id }).then(requests); }

    function removeFriend(id) {
      return api('/contact/removefriend', { id: id }).then(function () { return changed('friends'); });
    }

    function block(id) {
      return api('/contact/block', { id: id }).then(function () { return changed('blocks'); });
    }

    function unblock(id) { return api('/contact/unblock', { id: id }).then(blocked); }

    function isBlocked(id) { return state.blocked.some(function (u) { return u.id === id; }); }

    return {
      state: state, requests: requests, blocked: blocked, changed: changed, directory: directory,
      request: request, accept: function (id) { return answer(id, true); },
      decline: function (id) { return answer(id, false); }, cancel: cancel,
      removeFriend: removeFriend, block: block, unblock: unblock, isBlocked: isBlocked
    };
  }

  window.IM = window.IM || {};
  window.IM.createPeople = createPeople;
})();
