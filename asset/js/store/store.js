/* imchat web client: the chat's state, with no DOM in it — friends, groups, users, group
 * members, presence, and the conversations with their messages, unread counts, read receipts
 * and typing notices. Every live frame and API answer goes through here; what it needs from the
 * page (Vue's `reactive`, the translator `t`) is handed in, so it loads and runs in node too.
 * The outbox of unacknowledged frames is store/outbox.js; how state is shown is store/view.js. */
(function (IM) {
  'use strict';

  var CMD = IM.protocol.CMD;

  function keyOf(cmd, dstid) { return cmd + ':' + dstid; }

  /** options: me (the logged-in user), reactive (Vue.reactive; identity outside a page). */
  function createStore(options) {
    var reactive = options.reactive || function (value) { return value; };
    var state = reactive({
      me: options.me,
      friends: [],
      groups: [],
      users: {},       // id -> user, from friends, members and /user/find
      members: {},     // group id -> [user]
      convs: {},       // "cmd:dstid" -> conversation
      online: {}       // user id -> true/false
    });
    var seen = {};     // conv key -> Set of message ids (not reactive: only for dedupe)

    function meId() { return state.me.id; }

    function rememberUser(user) {
      if (user && user.id) state.users[user.id] = Object.assign({}, state.users[user.id] || {}, user);
    }

    function setMe(user) {
      state.me = user;
      rememberUser(user);
    }

    function setFriends(rows) {
      state.friends = rows || [];
      state.friends.forEach(function (f) {
        rememberUser(f);
        if (f.online && state.online[f.id] === undefined) state.online[f.id] = true;
      });
    }

    function setGroups(rows) { state.groups = rows || []; }

    function setMembers(groupId, rows) {
      rows.forEach(function (u) {
        rememberUser(u);
        if (u.id !== meId() && u.online) state.online[u.id] = true;
      });
      state.members[groupId] = rows;
    }

    function groupOf(id) {
      for (var i = 0; i < state.groups.length; i++) if (state.groups[i].id === id) return state.groups[i];
      return null;
    }

    function isFriend(id) { return state.friends.some(function (f) { return f.id === id; }); }

    function isMember(groupId, userId) {
      var known = state.members[groupId];
      return !known || known.some(function (u) { return u.id === userId; });
    }

    function ensureConv(cmd, dstid) {
      var key = keyOf(cmd, dstid);
      if (!state.convs[key]) {
        state.convs[key] = {
          key: key, cmd: cmd, dstid: dstid, messages: [], last: null, lastTs: 0, lastId: 0,
          unread: 0, mentions: 0, muted: false, readId: 0, sentReadId: 0, peerRead: {}, typing: {}, hasMore: true,
          loaded: false, loading: false, draft: '', gapAfter: false
        };
        seen[key] = new Set();
      }
      return state.convs[key];
    }

    function setLast(conv, msg) {
      if (!conv.last || (msg.id || Infinity) >= (conv.last.id || 0) || !conv.last.id) {
        conv.last = msg;
        conv.lastTs = msg.ts || Date.now();
        if (msg.id) conv.lastId = Math.max(conv.lastId, msg.id);
      }
    }

    /** The conversation a chat frame belongs to, from this user's side. */
    function convOfMessage(msg) {
      if (msg.cmd === CMD.GROUP) return ensureConv(CMD.GROUP, msg.dstid);
      return ensureConv(CMD.SINGLE, msg.userid === meId() ? msg.dstid : msg.userid);
    }

    /**
     * Put a message into its conversation once: by server id, or by `cid` replacing the local
     * copy that was waiting for its acknowledgement. Returns the conversation if it is new.
     */
    function addMessage(msg) {
      var conv = convOfMessage(msg);
      var ids = seen[conv.key];
      if (msg.id && ids.has(msg.id)) return null;
      var list = conv.messages;
      if (msg.cid && msg.userid === meId()) {
        for (var i = list.length - 1; i >= 0; i--) {
          if (list[i].cid === msg.cid) {
            if (!msg.id) return null;             // the same pending message twice
            list.splice(i, 1);                    // re-insert at its place by id below
            break;
          }
        }
      }
      var entry = Object.assign({ status: msg.id ? 'sent' : 'sending' }, msg);
      if (entry.id) {
        ids.add(entry.id);
        entry.status = 'sent';
        var at = list.length;
        while (at > 0 && (!list[at - 1].id || list[at - 1].id > entry.id)) at--;
        list.splice(at, 0, entry);
      } else {
        list.push(entry);
      }
      setLast(conv, entry);
      return conv;
    }

    /** The conversation's stored messages become `rows` (a page somewhere in its past); the
     * ones still waiting for their acknowledgement stay. */
    function replaceMessages(conv, rows) {
      conv.messages = conv.messages.filter(function (m) { return !m.id; });
      seen[conv.key] = new Set();
      var lastId = conv.lastId;
      rows.forEach(addMessage);
      conv.lastId = Math.max(conv.lastId, lastId);
    }

    /** A frame of ours not yet acknowledged (from the outbox or just sent), shown at once. */
    function addPending(frame, now) {
      return addMessage(Object.assign({}, frame, { userid: meId(), ts: frame.ts || now, status: 'sending' }));
    }

    /** The recent conversations from /message/conversations; returns the newest message id
     * (the sync point) and the users worth looking up. */
    function applyConversations(rows) {
      var newest = 0;
      var users = [];
      (rows || []).forEach(function (row) {
        var conv = ensureConv(row.cmd, row.dstid);
        conv.unread = row.unread || 0;
        conv.mentions = row.mentions || 0;
        conv.muted = !!row.muted;
        conv.readId = Math.max(conv.readId, row.read_id || 0);
        if (row.last) {
          setLast(conv, row.last);
          newest = Math.max(newest, row.last.id || 0);
          users.push(row.cmd === CMD.SINGLE ? row.dstid : row.last.userid);
        }
      });
      return { newest: newest, users: users };
    }

    /**
     * A live chat message. Returns null for a malformed or repeated one, else what the page
     * should follow up: {conv, mine, unseen (counts as a new unread message), needFriends,
     * needGroups, needMembers}.
     */
    function receive(msg) {
      if (typeof msg.id !== 'number' || typeof msg.userid !== 'number') return null;
      if (IM.protocol.isChange(msg)) return receiveChange(msg);
      var mine = msg.userid === meId();
      var conv = addMessage(msg);
      if (!conv) return null;
      if (conv.typing[msg.userid]) delete conv.typing[msg.userid];
      var group = msg.cmd === CMD.GROUP;
      var outcome = {
        conv: conv, mine: mine, unseen: !mine && msg.id > conv.readId,
        needFriends: !group && !mine && !isFriend(msg.userid),
        needGroups: group && !groupOf(msg.dstid),
        needMembers: group && !isMember(msg.dstid, msg.userid)   // joined since the list loaded
      };
      if (mine) conv.readId = Math.max(conv.readId, msg.id);
      return outcome;
    }

    /** An entry changing an earlier message: applied to it, never a message of its own. */
    function receiveChange(entry) {
      var conv = convOfMessage(entry);
      var ids = seen[conv.key];
      if (ids.has(entry.id)) return null;
      ids.add(entry.id);
      conv.lastId = Math.max(conv.lastId, entry.id);
      IM.relations.apply(conv, entry);
      if (conv.last && conv.last.id === entry.ref) IM.relations.apply({ messages: [conv.last] }, entry);
      return { conv: conv, mine: entry.userid === meId(), unseen: false, change: true };
    }

    /** The server stored our message `cid` as `id`. */
    function applyAck(ack) {
      var conv = state.convs[keyOf(ack.tcmd, ack.dstid)];
      if (!conv) return null;
      for (var i = conv.messages.length - 1; i >= 0; i--) {
        var msg = conv.messages[i];
        if (msg.cid === ack.cid) {
          if (!msg.id) {
            var stored = Object.assign({}, msg, { id: ack.id, ts: ack.ts || msg.ts, status: 'sent' });
            conv.messages.splice(i, 1);
            addMessage(stored);
          }
          break;
        }
      }
      conv.readId = Math.max(conv.readId, ack.id);
      return conv;
    }

    /** A refused frame: its message failed unless the refusal means "try again later". */
    function applyRefused(frame) {
      if (!frame.cid || IM.protocol.isRetryable(frame.reason)) return;
      Object.keys(state.convs).forEach(function (key) {
        state.convs[key].messages.forEach(function (msg) {
          if (msg.cid === frame.cid && !msg.id) {
            msg.status = 'failed';
            msg.error = frame.msg || '';
          }
        });
      });
    }

    /** The frame that sends a failed message again (same `cid`: stored at most once). */
    function retryFrame(msg) {
      msg.status = 'sending';
      var frame = {
        cmd: msg.cmd, dstid: msg.dstid, media: msg.media, content: msg.content || '', pic: msg.pic || '',
        url: msg.url || '', memo: msg.memo || '', amount: msg.amount || 0, cid: msg.cid
      };
      // A reply and its mentions are part of the message.
      ['ref', 'at', 'atall'].forEach(function (name) { if (msg[name]) frame[name] = msg[name]; });
      return frame;
    }

    function countUnread(conv) {
      var me = meId();
      return conv.messages.filter(function (m) { return m.id && m.userid !== me && m.id > conv.readId; }).length;
    }

    /** Someone read up to `id`; on another of my devices that is my own read point. */
    function applyReceipt(frame) {
      if (typeof frame.id !== 'number') return;
      if (frame.userid === meId()) {
        var own = ensureConv(frame.tcmd, frame.dstid);
        if (frame.id > own.readId) own.readId = frame.id;
        own.unread = countUnread(own);
        return;
      }
      var conv = frame.tcmd === CMD.GROUP ? ensureConv(CMD.GROUP, frame.dstid) : ensureConv(CMD.SINGLE, frame.userid);
      setPeerRead(conv, frame.userid, frame.id);
    }

    function setPeerRead(conv, userId, id) {
      if (!(conv.peerRead[userId] >= id)) conv.peerRead[userId] = id;
    }

    /** Rows of /message/receipts for one conversation. */
    function applyReceipts(conv, rows) {
      (rows || []).forEach(function (row) { setPeerRead(conv, row.userid, row.id); });
    }

    /** A typing notice, shown until `until` (ms); returns the conversation or null. */
    function applyTyping(frame, until) {
      if (frame.userid === meId()) return null;
      var conv = frame.tcmd === CMD.GROUP ? state.convs[keyOf(CMD.GROUP, frame.dstid)] : ensureConv(CMD.SINGLE, frame.userid);
      if (!conv) return null;
      conv.typing[frame.userid] = until;
      return conv;
    }

    function expireTyping(now) {
      Object.keys(state.convs).forEach(function (key) {
        var typing = state.convs[key].typing;
        Object.keys(typing).forEach(function (uid) { if (typing[uid] < now) delete typing[uid]; });
      });
    }

    /** A presence snapshot (`online` a list) or one user's change; returns true when that
     * user is not yet a friend (the friend list is worth reloading). */
    function applyPresence(frame) {
      if (Array.isArray(frame.online)) {
        var now = {};
        frame.online.forEach(function (id) { now[id] = true; });
        state.friends.forEach(function (f) { state.online[f.id] = !!now[f.id]; });
        frame.online.forEach(function (id) { state.online[id] = true; });
        return false;
      }
      if (typeof frame.userid !== 'number') return false;
      state.online[frame.userid] = !!frame.online;
      return !isFriend(frame.userid);
    }

    /** While disconnected nobody's presence is known; the snapshot on reconnect says. */
    function forgetPresence() {
      Object.keys(state.online).forEach(function (id) { state.online[id] = false; });
    }

    /** The newest (or oldest) stored message id in a conversation, 0 if none. */
    function newestId(conv) {
      for (var i = conv.messages.length - 1; i >= 0; i--) if (conv.messages[i].id) return conv.messages[i].id;
      return 0;
    }

    function oldestId(conv) {
      for (var i = 0; i < conv.messages.length; i++) if (conv.messages[i].id) return conv.messages[i].id;
      return 0;
    }

    /** The conversation is read to `id` (we told the server so). */
    function markedRead(conv, id) {
      conv.sentReadId = id;
      conv.readId = Math.max(conv.readId, id);
    }

    /** Unread messages in all conversations; a muted one counts only its mentions. */
    function totalUnread() {
      return Object.keys(state.convs).reduce(function (sum, key) {
        var conv = state.convs[key];
        return sum + (conv.muted ? (conv.mentions || 0) : (conv.unread || 0));
      }, 0);
    }

    return {
      state: state, keyOf: keyOf, rememberUser: rememberUser, setMe: setMe, setFriends: setFriends,
      setGroups: setGroups, setMembers: setMembers, groupOf: groupOf, isFriend: isFriend,
      ensureConv: ensureConv, addMessage: addMessage, addPending: addPending,
      replaceMessages: replaceMessages,
      applyConversations: applyConversations, receive: receive, applyAck: applyAck,
      applyRefused: applyRefused, retryFrame: retryFrame, countUnread: countUnread,
      applyReceipt: applyReceipt, applyReceipts: applyReceipts, applyTyping: applyTyping,
      expireTyping: expireTyping, applyPresence: applyPresence, forgetPresence: forgetPresence,
      newestId: newestId, oldestId: oldestId, markedRead: markedRead, totalUnread: totalUnread
    };
  }

  IM.createStore = createStore;
})(globalThis.IM = globalThis.IM || {});
