/* imchat web client: the chat app (/app). Owns the conversations in the browser — friends,
 * groups, recent conversations with unread counts, each conversation's messages (history
 * loaded page by page as the user scrolls up), sending text, emoji, stickers and pictures,
 * read receipts (cmd 102), typing notices (cmd 103), presence (cmd 104), catch-up after a
 * reconnect, and desktop notifications while the tab is hidden. */
(function () {
  'use strict';

  var util = IM.util;
  var api = util.api;
  var ui = IM.ui;
  var t = IM.i18n.t;

  var CMD_SINGLE = 10;
  var CMD_GROUP = 11;
  var PAGE = 30;
  var TYPING_SEND_EVERY_MS = 3000;  // while typing goes on, say so again this often
  var TYPING_MIN_GAP_MS = 600;       // the server drops notices closer than 0.5 s
  var TYPING_SHOW_MS = 6000;
  var GROUP_GAP_MS = 5 * 60 * 1000;
  var STICKER_BASE = '/asset/plugins/doutu/';

  function keyOf(cmd, dstid) { return cmd + ':' + dstid; }

  function previewOf(msg) {
    if (!msg) return '';
    if (msg.media === 1) return msg.content || '';
    if (msg.media === 4) return util.isStickerUrl(msg.url) ? t('stickerPreview') : t('picturePreview');
    if (msg.media === 3) return t('voicePreview');
    return msg.content || t('unsupported');
  }

  /** Which kind of bubble a message is, and its safe picture URLs. */
  function describe(msg) {
    if (msg.media === 1) return { kind: 'text' };
    if (msg.media === 4) {
      var url = util.safeMediaUrl(msg.url);
      if (!url) return { kind: 'unsupported' };
      if (url.indexOf('/asset/') === 0) return { kind: 'sticker', src: url };
      var thumb = util.safeMediaUrl(msg.pic) || url;
      return { kind: 'picture', src: url, thumb: thumb };
    }
    if (msg.media === 3) {
      var voice = util.safeMediaUrl(msg.url);
      return voice ? { kind: 'voice', src: voice } : { kind: 'unsupported' };
    }
    return msg.content ? { kind: 'text' } : { kind: 'unsupported' };
  }

  /** Display size of a picture from the upload answer (kept in `memo` as "WxH"). */
  function pictureSize(msg) {
    var match = /^(\d{1,5})x(\d{1,5})$/.exec(msg.memo || '');
    if (!match) return null;
    var width = +match[1];
    var height = +match[2];
    if (!width || !height) return null;
    var scale = Math.min(1, 240 / width, 240 / height);
    return { width: Math.max(40, Math.round(width * scale)) + 'px', height: Math.max(40, Math.round(height * scale)) + 'px' };
  }

  var ChatApp = {
    template: '#tpl-chat',
    mixins: [ui.i18nMixin],
    props: { me: { type: Object, required: true } },
    emits: ['logged-out', 'me-changed'],
    data: function () {
      return {
        friends: [],
        groups: [],
        users: {},            // id -> user, from friends, members and /user/find
        members: {},          // group id -> [user]
        convs: {},            // "cmd:dstid" -> conversation
        activeKey: null,
        online: {},           // user id -> true
        tab: 'chats',
        filter: '',
        plusOpen: false,
        dialog: null,
        form: {},
        panel: null,
        emojiGroup: 'smileys',
        stickerPacks: [],
        stickerPack: null,
        showMembers: window.innerWidth > 1100,
        conn: { state: 'connecting', seconds: 0, retryAt: 0 },
        now: Date.now(),
        newBelow: false,
        lightbox: null,
        pictureDraft: null,
        notifyPermission: typeof Notification === 'undefined' ? 'unsupported' : Notification.permission
      };
    },
    computed: {
      active: function () { return this.activeKey ? this.convs[this.activeKey] : null; },
      conversationList: function () {
        var needle = this.filter.trim().toLowerCase();
        var self = this;
        return Object.keys(this.convs).map(function (key) { return self.convs[key]; })
          .filter(function (conv) { return conv.lastTs || conv.key === self.activeKey || conv.messages.length; })
          .filter(function (conv) { return !needle || self.convName(conv).toLowerCase().indexOf(needle) !== -1; })
          .sort(function (a, b) { return (b.lastTs || 0) - (a.lastTs || 0) || (b.lastId || 0) - (a.lastId || 0); });
      },
      filteredFriends: function () {
        var needle = this.filter.trim().toLowerCase();
        var self = this;
        return this.friends.filter(function (f) {
          return !needle || (f.nickname + ' ' + f.mobile).toLowerCase().indexOf(needle) !== -1;
        }).slice().sort(function (a, b) {
          return (self.online[b.id] ? 1 : 0) - (self.online[a.id] ? 1 : 0) || (a.nickname || a.mobile).localeCompare(b.nickname || b.mobile);
        });
      },
      filteredGroups: function () {
        var needle = this.filter.trim().toLowerCase();
        return this.groups.filter(function (g) { return !needle || g.name.toLowerCase().indexOf(needle) !== -1; });
      },
      totalUnread: function () {
        var self = this;
        return Object.keys(this.convs).reduce(function (sum, key) { return sum + (self.convs[key].unread || 0); }, 0);
      },
      connLabel: function () {
        if (this.conn.state === 'online') return this.t('online');
        if (this.conn.state === 'reconnecting') return this.t('reconnecting').split(/[.。，,]/)[0];
        return this.t('connecting');
      },
      emojiGroups: function () { return IM.emoji.groups; },
      currentEmoji: function () {
        var id = this.emojiGroup;
        var group = IM.emoji.groups.filter(function (g) { return g.id === id; })[0] || IM.emoji.groups[0];
        return group.chars;
      },
      currentStickers: function () {
        var id = this.stickerPack;
        var pack = this.stickerPacks.filter(function (p) { return p.id === id; })[0];
        return pack ? pack.assets : [];
      },
      /** The active conversation as display rows: time separators and messages. */
      rows: function () {
        var conv = this.active;
        if (!conv) return [];
        var rows = [];
        var previous = null;
        var me = this.me.id;
        for (var i = 0; i < conv.messages.length; i++) {
          var msg = conv.messages[i];
          var ts = msg.ts || this.now;
          if (!previous || ts - (previous.ts || ts) > GROUP_GAP_MS) {
            rows.push({ type: 'time', key: 't' + (msg.id || msg.cid) , ts: ts });
            previous = null;
          }
          var info = describe(msg);
          var mine = msg.userid === me;
          rows.push({
            type: 'msg',
            key: msg.cid ? 'c' + msg.userid + ':' + msg.cid : 'i' + msg.id,
            msg: msg,
            mine: mine,
            first: !previous || previous.userid !== msg.userid,
            kind: info.kind,
            src: info.src,
            thumb: info.thumb,
            size: info.kind === 'picture' ? pictureSize(msg) : null,
            readLabel: mine && msg.id ? this.readLabel(conv, msg) : null
          });
          previous = msg;
        }
        return rows;
      }
    },
    watch: {
      'i18n.lang': function () { this.updateTitle(); },
      totalUnread: function () { this.updateTitle(); }
    },
    created: function () {
      var self = this;
      this.seen = {};                 // conv key -> Set of message ids (not reactive)
      this.userRequests = {};         // id -> promise of /user/find
      this.lastTypingAt = 0;          // when the last typing notice went out
      this.nextTypingAt = 0;          // the earliest time for the next one
      this.typingTimer = null;
      this.rememberUser(this.me);
      this.onVisibility = function () {
        if (document.visibilityState === 'visible') self.markRead(self.active);
      };
      this.onDocClick = function () { self.plusOpen = false; };
      document.addEventListener('visibilitychange', this.onVisibility);
      document.addEventListener('click', this.onDocClick);
      this.ticker = setInterval(function () { self.tick(); }, 1000);
      this.start();
    },
    unmounted: function () {
      clearInterval(this.ticker);
      clearTimeout(this.typingTimer);
      clearTimeout(this.startTimer);
      document.removeEventListener('visibilitychange', this.onVisibility);
      document.removeEventListener('click', this.onDocClick);
      if (this.socket) this.socket.stop();
      document.title = 'imchat';
    },
    methods: {
      shortTime: util.shortTime,
      dayTime: util.dayTime,
      formatBytes: util.formatBytes,
      clock: function (ms) {
        if (!ms) return '';
        var d = new Date(ms);
        return (d.getHours() < 10 ? '0' : '') + d.getHours() + ':' + (d.getMinutes() < 10 ? '0' : '') + d.getMinutes();
      },

      // ---- start-up ---------------------------------------------------------------------

      start: function () {
        var self = this;
        if (!this.stickerPacks.length) this.loadStickers();
        Promise.all([this.loadFriends(), this.loadGroups(), this.loadConversations()]).then(function (results) {
          var since = results[2];
          self.socket = new IM.ChatSocket({
            userId: self.me.id,
            since: since,
            onFrame: function (frame) { self.onFrame(frame); },
            onAck: function (ack) { self.onAck(ack); },
            onRefused: function (frame) { self.onRefused(frame); },
            onState: function (state, info) { self.onConnState(state, info); },
            onSessionEnded: function () { self.sessionEnded(); },
            checkSession: function () { self.checkSession(); }
          });
          self.restoreOutbox();
          self.socket.start();
        }, function (error) {
          if (error.status === 401) { self.sessionEnded(); return; }
          // The server is unreachable right now: say so and try again shortly.
          self.onConnState('reconnecting', { retryAt: Date.now() + 3000 });
          self.startTimer = setTimeout(function () { if (!self.ended) self.start(); }, 3000);
        });
      },

      loadFriends: function () {
        var self = this;
        return api('/contact/loadfriend', {}).then(function (answer) {
          self.friends = answer.rows || [];
          self.friends.forEach(function (f) {
            self.rememberUser(f);
            if (f.online && self.online[f.id] === undefined) self.online[f.id] = true;
          });
        });
      },

      loadGroups: function () {
        var self = this;
        return api('/contact/loadcommunity', {}).then(function (answer) { self.groups = answer.rows || []; });
      },

      /** The recent conversations; resolves with the newest message id (the sync point). */
      loadConversations: function () {
        var self = this;
        return api('/message/conversations', {}).then(function (answer) {
          var newest = 0;
          (answer.rows || []).forEach(function (row) {
            var conv = self.ensureConv(row.cmd, row.dstid);
            conv.unread = row.unread || 0;
            conv.readId = Math.max(conv.readId, row.read_id || 0);
            if (row.last) {
              self.setLast(conv, row.last);
              newest = Math.max(newest, row.last.id || 0);
              if (row.cmd === CMD_SINGLE) self.ensureUser(row.dstid);
              else self.ensureUser(row.last.userid);
            }
          });
          return newest;
        }, function (error) {
          if (error.status === 404) return 0;   // a server without history: live messages only
          throw error;
        });
      },

      loadStickers: function () {
        var self = this;
        fetch(STICKER_BASE + 'index.json', { credentials: 'same-origin' })
          .then(function (r) { return r.ok ? r.json() : { pkgids: [] }; })
          .then(function (index) {
            var ids = (index.pkgids || []).filter(function (id) { return /^[A-Za-z0-9_-]+$/.test(id); });
            return Promise.all(ids.map(function (id) {
              return fetch(STICKER_BASE + id + '/info.json', { credentials: 'same-origin' })
                .then(function (r) { return r.ok ? r.json() : null; })
                .then(function (info) {
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
          })
          .then(function (packs) {
            self.stickerPacks = (packs || []).filter(Boolean);
            if (self.stickerPacks.length) self.stickerPack = self.stickerPacks[0].id;
          }, function () { /* no stickers */ });
      },

      restoreOutbox: function () {
        var self = this;
        this.socket.pending().forEach(function (frame) {
          self.addMessage(Object.assign({}, frame, { userid: self.me.id, ts: frame.ts || Date.now(), status: 'sending' }), { own: true });
        });
      },

      // ---- people and conversations -----------------------------------------------------

      rememberUser: function (user) {
        if (user && user.id) this.users[user.id] = Object.assign({}, this.users[user.id] || {}, user);
      },

      ensureUser: function (id) {
        var self = this;
        if (!id || this.users[id] || this.userRequests[id]) return;
        this.userRequests[id] = api('/user/find', { id: id }).then(function (answer) {
          self.rememberUser(answer.data);
        }, function () { /* unknown user: shown by number */ });
      },

      userName: function (id) {
        var user = this.users[id];
        if (id === this.me.id) return this.me.nickname || this.me.mobile;
        return user ? (user.nickname || user.mobile) : '#' + id;
      },

      userAvatar: function (id) {
        if (id === this.me.id) return this.me.avatar;
        var user = this.users[id];
        return user ? user.avatar : '';
      },

      groupOf: function (id) {
        for (var i = 0; i < this.groups.length; i++) if (this.groups[i].id === id) return this.groups[i];
        return null;
      },

      isFriend: function (id) {
        return this.friends.some(function (f) { return f.id === id; });
      },

      convName: function (conv) {
        if (conv.cmd === CMD_GROUP) {
          var group = this.groupOf(conv.dstid);
          return group ? group.name : '#' + conv.dstid;
        }
        return this.userName(conv.dstid);
      },

      convAvatar: function (conv) {
        if (conv.cmd === CMD_GROUP) {
          var group = this.groupOf(conv.dstid);
          return group ? group.icon : '';
        }
        return this.userAvatar(conv.dstid);
      },

      preview: function (conv) {
        if (!conv.last) return '';
        var text = previewOf(conv.last);
        if (conv.cmd === CMD_GROUP && conv.last.userid !== this.me.id) return this.userName(conv.last.userid) + ': ' + text;
        if (conv.last.userid === this.me.id) return this.t('you') + ': ' + text;
        return text;
      },

      ensureConv: function (cmd, dstid) {
        var key = keyOf(cmd, dstid);
        if (!this.convs[key]) {
          this.convs[key] = {
            key: key, cmd: cmd, dstid: dstid, messages: [], last: null, lastTs: 0, lastId: 0,
            unread: 0, readId: 0, peerRead: {}, typing: {}, hasMore: true, loaded: false,
            loading: false, draft: ''
          };
          this.seen[key] = new Set();
        }
        return this.convs[key];
      },

      setLast: function (conv, msg) {
        if (!conv.last || (msg.id || Infinity) >= (conv.last.id || 0) || !conv.last.id) {
          conv.last = msg;
          conv.lastTs = msg.ts || Date.now();
          if (msg.id) conv.lastId = Math.max(conv.lastId, msg.id);
        }
      },

      /** The conversation a chat frame belongs to, from this user's side. */
      convOfMessage: function (msg) {
        if (msg.cmd === CMD_GROUP) return this.ensureConv(CMD_GROUP, msg.dstid);
        var peer = msg.userid === this.me.id ? msg.dstid : msg.userid;
        return this.ensureConv(CMD_SINGLE, peer);
      },

      /**
       * Put a message into its conversation once: by server id, or by `cid` replacing the
       * local copy that was waiting for its acknowledgement. Returns true if it is new.
       */
      addMessage: function (msg, options) {
        options = options || {};
        var conv = this.convOfMessage(msg);
        var seen = this.seen[conv.key];
        if (msg.id && seen.has(msg.id)) return false;
        var list = conv.messages;
        if (msg.cid && msg.userid === this.me.id) {
          for (var i = list.length - 1; i >= 0; i--) {
            if (list[i].cid === msg.cid) {
              if (!msg.id) return false;            // the same pending message twice
              list.splice(i, 1);                    // re-insert at its place by id below
              break;
            }
          }
        }
        var entry = Object.assign({ status: msg.id ? 'sent' : 'sending' }, msg);
        if (entry.id) {
          seen.add(entry.id);
          entry.status = 'sent';
          var at = list.length;
          while (at > 0 && (!list[at - 1].id || list[at - 1].id > entry.id)) at--;
          list.splice(at, 0, entry);
        } else {
          list.push(entry);
        }
        this.setLast(conv, entry);
        return conv;
      },

      // ---- live frames ------------------------------------------------------------------

      onFrame: function (frame) {
        switch (frame.cmd) {
          case CMD_SINGLE:
          case CMD_GROUP:
            this.receive(frame);
            break;
          case 102: this.onReceipt(frame); break;
          case 103: this.onTyping(frame); break;
          case 104: this.onPresence(frame); break;
          default: break;
        }
      },

      receive: function (msg) {
        if (typeof msg.id !== 'number' || typeof msg.userid !== 'number') return;
        var mine = msg.userid === this.me.id;
        var conv = this.addMessage(msg, { own: mine });
        if (!conv) return;
        if (conv.typing[msg.userid]) delete conv.typing[msg.userid];
        if (msg.cmd === CMD_SINGLE && !mine && !this.isFriend(msg.userid)) this.loadFriends();
        if (msg.cmd === CMD_GROUP && !this.groupOf(msg.dstid)) this.loadGroups();
        var known = this.members[msg.dstid];
        if (msg.cmd === CMD_GROUP && known && !known.some(function (u) { return u.id === msg.userid; })) {
          this.loadMembers(msg.dstid);                // someone joined since the list was loaded
        }
        this.ensureUser(msg.userid);
        if (mine) {
          conv.readId = Math.max(conv.readId, msg.id);
        } else if (msg.id > conv.readId) {
          var looking = this.activeKey === conv.key && document.visibilityState === 'visible';
          if (looking) this.markRead(conv);
          else conv.unread += 1;
          if (document.visibilityState !== 'visible') this.notify(conv, msg);
        }
        if (this.activeKey === conv.key) this.afterNewMessage(mine);
      },

      onAck: function (ack) {
        var conv = this.convs[keyOf(ack.tcmd, ack.dstid)];
        if (!conv) return;
        for (var i = conv.messages.length - 1; i >= 0; i--) {
          var msg = conv.messages[i];
          if (msg.cid === ack.cid) {
            if (!msg.id) {
              var stored = Object.assign({}, msg, { id: ack.id, ts: ack.ts || msg.ts, status: 'sent' });
              conv.messages.splice(i, 1);
              this.addMessage(stored);
            }
            break;
          }
        }
        conv.readId = Math.max(conv.readId, ack.id);
      },

      onRefused: function (frame) {
        if (!frame.cid) return;
        var self = this;
        Object.keys(this.convs).forEach(function (key) {
          self.convs[key].messages.forEach(function (msg) {
            if (msg.cid === frame.cid && !msg.id && frame.reason !== 'throttled') {
              msg.status = 'failed';
              msg.error = frame.msg || '';
            }
          });
        });
        if (frame.reason !== 'throttled') ui.toast(frame.msg || this.t('failed'), 'error');
      },

      onReceipt: function (frame) {
        if (typeof frame.id !== 'number') return;
        if (frame.userid === this.me.id) {            // read on another of my devices
          var own = this.ensureConv(frame.tcmd, frame.dstid);
          if (frame.id > own.readId) own.readId = frame.id;
          own.unread = this.countUnread(own);
          return;
        }
        var conv = frame.tcmd === CMD_GROUP ? this.ensureConv(CMD_GROUP, frame.dstid) : this.ensureConv(CMD_SINGLE, frame.userid);
        if (!(conv.peerRead[frame.userid] >= frame.id)) conv.peerRead[frame.userid] = frame.id;
      },

      onTyping: function (frame) {
        if (frame.userid === this.me.id) return;
        var conv = frame.tcmd === CMD_GROUP ? this.convs[keyOf(CMD_GROUP, frame.dstid)] : this.ensureConv(CMD_SINGLE, frame.userid);
        if (!conv) return;
        conv.typing[frame.userid] = Date.now() + TYPING_SHOW_MS;
        this.ensureUser(frame.userid);
      },

      onPresence: function (frame) {
        var self = this;
        if (Array.isArray(frame.online)) {
          var now = {};
          frame.online.forEach(function (id) { now[id] = true; });
          this.friends.forEach(function (f) { self.online[f.id] = !!now[f.id]; });
          frame.online.forEach(function (id) { self.online[id] = true; });
          return;
        }
        if (typeof frame.userid === 'number') {
          this.online[frame.userid] = !!frame.online;
          if (!this.isFriend(frame.userid)) this.loadFriends();
        }
      },

      onConnState: function (state, info) {
        this.conn.state = state;
        this.conn.retryAt = info.retryAt || 0;
        this.conn.seconds = info.retryAt ? Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000)) : 0;
        if (state === 'reconnecting') {
          // Who is online is unknown while disconnected; the snapshot on reconnect (104) says.
          var online = this.online;
          Object.keys(online).forEach(function (id) { online[id] = false; });
        }
        if (state === 'online') {
          this.markRead(this.active);
          if (this.active && this.active.loaded) this.loadReceipts(this.active);
        }
      },

      tick: function () {
        this.now = Date.now();
        if (this.conn.state === 'reconnecting' && this.conn.retryAt) {
          this.conn.seconds = Math.max(0, Math.ceil((this.conn.retryAt - this.now) / 1000));
        }
        var self = this;
        Object.keys(this.convs).forEach(function (key) {
          var typing = self.convs[key].typing;
          Object.keys(typing).forEach(function (uid) { if (typing[uid] < self.now) delete typing[uid]; });
        });
      },

      typingText: function (conv) {
        var ids = Object.keys(conv.typing).filter(function (uid) { return conv.typing[uid] >= this.now; }, this);
        if (!ids.length) return '';
        if (conv.cmd === CMD_SINGLE) return this.t('typing', { name: this.userName(conv.dstid) });
        return this.t('typing', { name: ids.map(function (uid) { return this.userName(+uid); }, this).join(', ') });
      },

      reconnectNow: function () { if (this.socket) this.socket.reconnectNow(); },

      // ---- reading ----------------------------------------------------------------------

      countUnread: function (conv) {
        var me = this.me.id;
        return conv.messages.filter(function (m) { return m.id && m.userid !== me && m.id > conv.readId; }).length;
      },

      /** Tell the server (and so the sender) that the open conversation is read to its end. */
      markRead: function (conv) {
        if (!conv || conv.key !== this.activeKey || document.visibilityState !== 'visible') return;
        var last = 0;
        for (var i = conv.messages.length - 1; i >= 0; i--) {
          if (conv.messages[i].id) { last = conv.messages[i].id; break; }
        }
        conv.unread = 0;
        if (!last || last <= (conv.sentReadId || 0)) return;
        if (this.socket && this.socket.sendRaw({ cmd: 102, tcmd: conv.cmd, dstid: conv.dstid, id: last })) {
          conv.sentReadId = last;
          conv.readId = Math.max(conv.readId, last);
        }
      },

      readLabel: function (conv, msg) {
        if (conv.cmd === CMD_SINGLE) {
          var done = (conv.peerRead[conv.dstid] || 0) >= msg.id;
          return { done: done, text: done ? this.t('read') : this.t('unread') };
        }
        var me = this.me.id;
        var count = 0;
        Object.keys(conv.peerRead).forEach(function (uid) {
          if (+uid !== me && conv.peerRead[uid] >= msg.id) count += 1;
        });
        var members = this.members[conv.dstid];
        if (members && members.length > 1 && count >= members.length - 1) return { done: true, text: this.t('allRead') };
        return { done: count > 0, text: count ? this.t('readBy', { n: count }) : this.t('unread') };
      },

      loadReceipts: function (conv) {
        var self = this;
        return api('/message/receipts', { cmd: conv.cmd, dstid: conv.dstid }).then(function (answer) {
          (answer.rows || []).forEach(function (row) {
            if (!(conv.peerRead[row.userid] >= row.id)) conv.peerRead[row.userid] = row.id;
          });
        }, function () { /* receipts are a nicety */ });
      },

      // ---- opening a conversation and its history ---------------------------------------

      openConversation: function (cmd, dstid) {
        var conv = this.ensureConv(cmd, dstid);
        this.activeKey = conv.key;
        this.panel = null;
        this.typingRestart();
        this.newBelow = false;
        this.tab = this.tab === 'contacts' && window.innerWidth > 760 ? 'contacts' : 'chats';
        if (cmd === CMD_SINGLE) this.ensureUser(dstid);
        if (cmd === CMD_GROUP) this.loadMembers(dstid);
        var self = this;
        var first = !conv.loaded ? this.loadHistory(conv, true) : Promise.resolve();
        first.then(function () {
          self.$nextTick(function () {
            self.scrollToBottom(false);
            self.fillViewport(conv);
            self.markRead(conv);
            if (self.$refs.input && window.innerWidth > 760) self.$refs.input.focus();
          });
        });
        this.loadReceipts(conv);
      },

      closeConversation: function () {
        this.activeKey = null;
        this.panel = null;
      },

      loadHistory: function (conv, initial) {
        var self = this;
        if (conv.loading || (!initial && !conv.hasMore)) return Promise.resolve();
        var oldest = 0;
        for (var i = 0; i < conv.messages.length; i++) {
          if (conv.messages[i].id) { oldest = conv.messages[i].id; break; }
        }
        var body = { cmd: conv.cmd, dstid: conv.dstid, limit: PAGE };
        if (!initial && oldest) body.before = oldest;
        conv.loading = true;
        return api('/message/history', body).then(function (answer) {
          var rows = answer.rows || [];
          rows.forEach(function (msg) {
            self.addMessage(msg);
            self.ensureUser(msg.userid);
          });
          // A page of large messages may be cut short by the server (`more`).
          conv.hasMore = rows.length >= PAGE || answer.more === true;
          conv.loaded = true;
        }, function (error) {
          conv.loaded = true;
          conv.hasMore = false;
          if (error.status !== 404) ui.toast(error.message, 'error');
        }).then(function () { conv.loading = false; });
      },

      onScroll: function () {
        var el = this.$refs.scroller;
        var conv = this.active;
        if (!el || !conv) return;
        if (el.scrollHeight - el.scrollTop - el.clientHeight < 60) this.newBelow = false;
        if (el.scrollTop < 80 && conv.hasMore && !conv.loading && conv.loaded) {
          var before = el.scrollHeight - el.scrollTop;
          var self = this;
          this.loadHistory(conv, false).then(function () {
            self.$nextTick(function () { el.scrollTop = el.scrollHeight - before; });
          });
        }
      },

      /** Short pages leave nothing to scroll: load older messages until the pane is full. */
      fillViewport: function (conv) {
        var el = this.$refs.scroller;
        var self = this;
        if (!el || conv !== this.active || !conv.hasMore || conv.loading) return;
        if (el.scrollHeight > el.clientHeight + 80) return;
        this.loadHistory(conv, false).then(function () {
          self.$nextTick(function () {
            self.scrollToBottom(false);
            self.fillViewport(conv);
          });
        });
      },

      scrollToBottom: function (smooth) {
        var el = this.$refs.scroller;
        if (!el) return;
        this.newBelow = false;
        el.scrollTo({ top: el.scrollHeight, behavior: smooth ? 'smooth' : 'auto' });
      },

      afterNewMessage: function (mine) {
        var el = this.$refs.scroller;
        var self = this;
        if (!el) return;
        var nearBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 120;
        this.$nextTick(function () {
          if (mine || nearBottom) self.scrollToBottom(false);
          else self.newBelow = true;
        });
      },

      loadMembers: function (groupId) {
        var self = this;
        return api('/contact/members', { id: groupId }).then(function (answer) {
          var rows = answer.rows || [];
          rows.forEach(function (u) {
            self.rememberUser(u);
            if (u.id !== self.me.id && u.online) self.online[u.id] = true;
          });
          self.members[groupId] = rows;
        }, function (error) { ui.toast(error.message, 'error'); });
      },

      toggleMembers: function () {
        this.showMembers = !this.showMembers;
        if (this.showMembers && this.active) this.loadMembers(this.active.dstid);
      },

      viewPicture: function (row) { this.lightbox = row.src; },

      // ---- sending ----------------------------------------------------------------------

      /** Send a chat message: shown at once, kept in the outbox until acknowledged. */
      send: function (fields) {
        var conv = this.active;
        if (!conv || !this.socket) return;
        var frame = Object.assign({
          cmd: conv.cmd, dstid: conv.dstid, media: 1, content: '', pic: '', url: '', memo: '', amount: 0,
          cid: util.newCid(this.me.id)
        }, fields);
        this.addMessage(Object.assign({}, frame, { userid: this.me.id, ts: Date.now(), status: 'sending' }), { own: true });
        this.socket.sendMessage(frame);
        this.afterNewMessage(true);
      },

      sendText: function () {
        var conv = this.active;
        if (!conv) return;
        var text = conv.draft.replace(/\s+$/, '');
        if (!text.trim()) return;
        conv.draft = '';
        this.send({ media: 1, content: text });
        // Keep the emoji picker open for the next message on wide screens; on a phone it
        // would cover the conversation.
        this.panel = this.panel === 'emoji' && window.innerWidth > 760 ? 'emoji' : null;
        this.typingRestart();
        var input = this.$refs.input;
        this.$nextTick(function () { if (input) { input.style.height = ''; input.focus(); } });
      },

      sendSticker: function (url) {
        if (!util.isStickerUrl(url)) return;
        this.send({ media: 4, url: url });
        if (window.innerWidth <= 760) this.panel = null;
      },

      retry: function (msg) {
        if (!this.socket) return;
        msg.status = 'sending';
        var frame = { cmd: msg.cmd, dstid: msg.dstid, media: msg.media, content: msg.content || '', pic: msg.pic || '', url: msg.url || '', memo: msg.memo || '', amount: msg.amount || 0, cid: msg.cid };
        this.socket.sendMessage(frame);
      },

      onKeydown: function (event) {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
          event.preventDefault();
          this.sendText();
        }
      },

      onInput: function (event) {
        var el = event.target;
        el.style.height = 'auto';
        el.style.height = Math.min(el.scrollHeight, 160) + 'px';
        this.announceTyping();
      },

      /** Tell the peer(s) that this user is typing: at once, then every few seconds. */
      announceTyping: function () {
        var conv = this.active;
        var self = this;
        if (!conv || !conv.draft.trim() || !this.socket) return;
        var now = Date.now();
        if (now >= this.nextTypingAt) {
          if (this.socket.sendRaw({ cmd: 103, tcmd: conv.cmd, dstid: conv.dstid })) {
            this.lastTypingAt = now;
            this.nextTypingAt = now + TYPING_SEND_EVERY_MS;
          }
        } else if (!this.typingTimer) {
          this.typingTimer = setTimeout(function () {
            self.typingTimer = null;
            self.announceTyping();
          }, this.nextTypingAt - now);
        }
      },

      /** After a send or a change of conversation, the next notice may go out soon. */
      typingRestart: function () {
        clearTimeout(this.typingTimer);
        this.typingTimer = null;
        this.nextTypingAt = this.lastTypingAt + TYPING_MIN_GAP_MS;
      },

      togglePanel: function (name) {
        this.panel = this.panel === name ? null : name;
      },

      insertEmoji: function (ch) {
        var conv = this.active;
        var input = this.$refs.input;
        if (!conv) return;
        var start = input ? input.selectionStart : conv.draft.length;
        var end = input ? input.selectionEnd : conv.draft.length;
        conv.draft = conv.draft.slice(0, start) + ch + conv.draft.slice(end);
        this.$nextTick(function () {
          if (!input) return;
          input.focus();
          input.selectionStart = input.selectionEnd = start + ch.length;
        });
      },

      pickPicture: function (event) {
        var file = event.target.files && event.target.files[0];
        event.target.value = '';
        if (!file) return;
        if (!/^image\/(png|jpeg|gif|webp)$/.test(file.type)) { ui.toast(this.t('onlyPictures'), 'error'); return; }
        this.pictureDraft = { file: file, name: file.name, size: file.size, preview: URL.createObjectURL(file), conv: this.activeKey };
        this.form = { busy: false, error: '' };
        this.dialog = 'picture';
      },

      cancelPicture: function () {
        if (this.pictureDraft) URL.revokeObjectURL(this.pictureDraft.preview);
        this.pictureDraft = null;
        this.dialog = null;
      },

      sendPicture: function () {
        var self = this;
        var draft = this.pictureDraft;
        if (!draft) return;
        this.form.busy = true;
        this.form.error = '';
        var form = new FormData();
        form.append('file', draft.file);
        api('/attach/upload', form).then(function (answer) {
          var url = util.safeMediaUrl(answer.data);
          if (!url) throw new Error(self.t('unsupported'));
          if (self.activeKey !== draft.conv) self.activeKey = draft.conv;
          var memo = answer.width && answer.height ? answer.width + 'x' + answer.height : '';
          self.send({ media: 4, url: url, pic: util.safeMediaUrl(answer.thumb) || '', memo: memo });
          self.cancelPicture();
        }, function (error) {
          self.form.error = error.message;
        }).then(function () { self.form.busy = false; });
      },

      // ---- dialogs ----------------------------------------------------------------------

      openDialog: function (name) {
        this.form = { mobile: '', name: '', memo: '', icon: '', busy: false, error: '' };
        this.dialog = name;
      },

      openProfile: function () {
        this.notifyPermission = typeof Notification === 'undefined' ? 'unsupported' : Notification.permission;
        this.dialog = 'profile';
      },

      addFriend: function () {
        var self = this;
        this.form.busy = true;
        this.form.error = '';
        api('/contact/addfriend', { dstname: this.form.mobile }).then(function (answer) {
          var friend = answer.data;
          self.dialog = null;
          ui.toast(self.t('friendAdded', { name: friend.nickname || friend.mobile }), 'success');
          self.rememberUser(friend);
          if (friend.online) self.online[friend.id] = true;
          return self.loadFriends().then(function () { self.openConversation(CMD_SINGLE, friend.id); });
        }, function (error) { self.form.error = error.message; }).then(function () { self.form.busy = false; });
      },

      pickGroupIcon: function (event) {
        var self = this;
        var file = event.target.files && event.target.files[0];
        event.target.value = '';
        if (!file) return;
        var form = new FormData();
        form.append('file', file);
        api('/attach/upload', form).then(function (answer) {
          self.form.icon = util.safeMediaUrl(answer.thumb) || util.safeMediaUrl(answer.data);
        }, function (error) { self.form.error = error.message; });
      },

      createGroup: function () {
        var self = this;
        this.form.busy = true;
        this.form.error = '';
        api('/contact/createcommunity', { name: this.form.name, memo: this.form.memo, icon: this.form.icon || '' }).then(function (answer) {
          var group = answer.data;
          self.dialog = null;
          ui.toast(self.t('groupCreated', { name: group.name }), 'success');
          return self.afterGroupChange(group);
        }, function (error) { self.form.error = error.message; }).then(function () { self.form.busy = false; });
      },

      joinGroup: function () {
        var self = this;
        this.form.busy = true;
        this.form.error = '';
        api('/contact/joincommunity', { dstname: this.form.name }).then(function (answer) {
          var group = answer.data;
          self.dialog = null;
          ui.toast(self.t('groupJoined', { name: group.name }), 'success');
          return self.afterGroupChange(group);
        }, function (error) { self.form.error = error.message; }).then(function () { self.form.busy = false; });
      },

      afterGroupChange: function (group) {
        var self = this;
        return this.loadGroups().then(function () { self.openConversation(CMD_GROUP, group.id); });
      },

      changeAvatar: function (event) {
        var self = this;
        var file = event.target.files && event.target.files[0];
        event.target.value = '';
        if (!file) return;
        IM.pages.uploadAvatar(file).then(function (avatar) {
          var me = Object.assign({}, self.me, { avatar: avatar });
          self.rememberUser(me);
          self.$emit('me-changed', me);
          ui.toast(self.t('avatarSaved'), 'success');
        }, function (error) { ui.toast(error.message, 'error'); });
      },

      askNotifications: function () {
        var self = this;
        if (typeof Notification === 'undefined') return;
        Promise.resolve(Notification.requestPermission()).then(function (permission) {
          self.notifyPermission = permission;
        });
      },

      notify: function (conv, msg) {
        if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
        var self = this;
        try {
          var title = conv.cmd === CMD_GROUP ? this.convName(conv) + ' · ' + this.userName(msg.userid) : this.userName(msg.userid);
          var note = new Notification(title, {
            body: previewOf(msg).slice(0, 140),
            tag: conv.key,
            icon: util.safeMediaUrl(this.userAvatar(msg.userid)) || '/asset/img/logo.svg'
          });
          note.onclick = function () {
            window.focus();
            self.openConversation(conv.cmd, conv.dstid);
            note.close();
          };
        } catch (e) { /* some browsers only allow notifications from a service worker */ }
      },

      updateTitle: function () {
        document.title = (this.totalUnread ? '(' + this.totalUnread + ') ' : '') + 'imchat';
      },

      // ---- session ----------------------------------------------------------------------

      checkSession: function () {
        var self = this;
        api('/user/me', {}).then(null, function (error) { if (error.status === 401) self.sessionEnded(); });
      },

      sessionEnded: function () {
        if (this.ended) return;
        this.ended = true;
        if (this.socket) this.socket.stop();
        ui.toast(this.t('sessionEnded'), 'error');
        this.$emit('logged-out');
      },

      logout: function () {
        var self = this;
        this.ended = true;
        if (this.socket) this.socket.stop();
        api('/user/logout', {}).then(null, function () { /* the cookie is cleared anyway */ }).then(function () {
          self.dialog = null;
          self.$emit('logged-out');
        });
      }
    }
  };

  window.IM = window.IM || {};
  window.IM.ChatApp = ChatApp;
})();
