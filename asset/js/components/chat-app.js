/* imchat web client: the chat app (/app) — the frame around the sidebar, the open
 * conversation, the member drawer and the dialogs, which it provides to them as `chat`. Owns
 * the session's moving parts: start-up (friends, groups, recent conversations, then the
 * socket from the newest message id), live frames into the store, the connection state,
 * opening a conversation, sending (through the socket's outbox), read receipts, desktop
 * notifications while the tab is hidden (not for a muted conversation, unless it mentions me),
 * and the end of the session. Replies, recalls, edits, reactions and mute are chat/actions.js. The state itself is the
 * DOM-free store (store/store.js); what is loaded over HTTP is chat/loaders.js. */
(function () {
  'use strict';

  var ui = IM.ui;
  var t = IM.i18n.t;
  var CMD = IM.protocol.CMD;
  var MEDIA = IM.protocol.MEDIA;
  var TYPING_SHOW_MS = 6000;
  var RETRY_START_MS = 3000;

  IM.components = IM.components || {};
  IM.components.ChatApp = {
    render: IM.templates['chat-app'],
    mixins: [ui.i18nMixin, IM.chatActions],
    props: { me: { type: Object, required: true } },
    emits: ['logged-out', 'me-changed'],
    provide: function () { return { chat: this }; },
    beforeCreate: function () {
      // Not reactive itself: its state is (data.state); its functions never change.
      this.store = IM.createStore({ me: this.me, reactive: Vue.reactive });
    },
    data: function () {
      return {
        state: this.store.state,
        activeKey: null,
        tab: 'chats',
        panel: null,            // the composer's open picker: 'emoji', 'stickers' or null
        dialog: null,           // addFriend, createGroup, joinGroup, picture, profile, people, groupInvite, groupSettings
        pictureDraft: null,
        peopleTab: 'find',
        lightbox: null,
        stickerPacks: [],
        showMembers: window.innerWidth > 1100,
        conn: { state: 'connecting', seconds: 0, retryAt: 0 },
        // Message search (components/message-search.js): scope null = every conversation.
        search: { open: false, q: '', scope: null, rows: [], more: false, nextBefore: null, loading: false, error: '', ran: false },
        now: Date.now()
      };
    },
    computed: {
      active: function () { return this.activeKey ? this.state.convs[this.activeKey] : null; },
      drawerOpen: function () { return !!(this.showMembers && this.active && this.active.cmd === CMD.GROUP); },
      totalUnread: function () { return this.store.totalUnread(); }
    },
    watch: {
      me: function (user) { this.store.setMe(user); },
      'i18n.lang': function () { this.updateTitle(); },
      totalUnread: function () { this.updateTitle(); }
    },
    created: function () {
      var self = this;
      this.view = IM.createView(this.store, t);
      this.loaders = IM.createLoaders(this.store);
      this.people = IM.createPeople(this.store, this.loaders, Vue.reactive);
      this.groups = IM.createGroupActions(this);
      this.store.rememberUser(this.me);
      this.onVisibility = function () {
        if (document.visibilityState === 'visible') self.markRead(self.active);
      };
      document.addEventListener('visibilitychange', this.onVisibility);
      this.ticker = setInterval(function () { self.tick(); }, 1000);
      this.start();
    },
    unmounted: function () {
      clearInterval(this.ticker);
      clearTimeout(this.startTimer);
      document.removeEventListener('visibilitychange', this.onVisibility);
      if (this.socket) this.socket.stop();
      document.title = 'imchat';
    },
    methods: {
      // ---- start-up ---------------------------------------------------------------------

      start: function () {
        var self = this;
        var loaders = this.loaders;
        if (!this.stickerPacks.length) loaders.stickers().then(function (packs) { self.stickerPacks = packs; });
        this.people.requests();
        this.people.blocked();
        Promise.all([loaders.friends(), loaders.groups(), loaders.conversations()]).then(function (results) {
          self.socket = new IM.ChatSocket({
            userId: self.me.id,
            since: results[2],
            onFrame: function (frame) { self.onFrame(frame); },
            onAck: function (ack) { self.store.applyAck(ack); self.changeAcked(ack); },
            onRefused: function (frame) { self.onRefused(frame); },
            onState: function (state, info) { self.onConnState(state, info); },
            onSessionEnded: function () { self.sessionEnded(); },
            checkSession: function () { self.checkSession(); }
          });
          self.socket.pending().forEach(function (frame) {
            if (IM.protocol.isChat(frame.cmd)) self.store.addPending(frame, Date.now());
          });
          loaders.mutes();
          self.socket.start();
        }, function (error) {
          if (error.status === 401) { self.sessionEnded(); return; }
          // The server is unreachable right now: say so and try again shortly.
          self.onConnState('reconnecting', { retryAt: Date.now() + RETRY_START_MS });
          self.startTimer = setTimeout(function () { if (!self.ended) self.start(); }, RETRY_START_MS);
        });
      },

      // ---- live frames ------------------------------------------------------------------

      onFrame: function (frame) {
        switch (frame.cmd) {
          case CMD.SINGLE:
          case CMD.GROUP:
            this.receive(frame);
            break;
          case CMD.READ: this.store.applyReceipt(frame); break;
          case CMD.MUTE: this.applyMute(frame); break;
          case CMD.TYPING:
            if (this.store.applyTyping(frame, Date.now() + TYPING_SHOW_MS)) this.loaders.user(frame.userid);
            break;
          case CMD.PRESENCE:
            if (this.store.applyPresence(frame)) this.loaders.friends();
            break;
          case CMD.CONTACTS: this.people.changed(frame.what); break;
          default: break;
        }
      },

      receive: function (msg) {
        var outcome = this.store.receive(msg);
        if (!outcome) return;
        // A group change: the lists follow it; a group that is no longer ours leaves the page.
        if (msg.media === MEDIA.NOTICE && this.groups.applyNotice(msg)) return;
        var conv = outcome.conv;
        if (outcome.needFriends) this.loaders.friends();
        if (outcome.needGroups) this.loaders.groups();
        if (outcome.needMembers) this.loadMembers(msg.dstid);
        this.loaders.user(msg.userid);
        if (outcome.unseen) {
          var looking = this.activeKey === conv.key && document.visibilityState === 'visible';
          var called = IM.relations.mentions(msg, this.me.id);
          if (looking) this.markRead(conv);
          else conv.unread += 1;
          if (called && !looking) conv.mentions += 1;
          // A muted conversation counts quietly; a mention still notifies.
          if (document.visibilityState !== 'visible' && (!conv.muted || called)) this.notify(conv, msg);
        }
        if (this.activeKey === conv.key && this.$refs.pane) this.$refs.pane.afterNewMessage(outcome.mine);
      },

      onRefused: function (frame) {
        this.store.applyRefused(frame);
        if (!IM.protocol.isRetryable(frame.reason)) ui.toast(frame.msg || this.t('failed'), 'error');
      },

      onConnState: function (state, info) {
        this.conn.state = state;
        this.conn.retryAt = info.retryAt || 0;
        this.conn.seconds = info.retryAt ? Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000)) : 0;
        if (state === 'reconnecting') this.store.forgetPresence();
        if (state === 'online') {
          this.markRead(this.active);
          if (this.active && this.active.loaded) this.loaders.receipts(this.active);
        }
      },

      tick: function () {
        this.now = Date.now();
        if (this.conn.state === 'reconnecting' && this.conn.retryAt) {
          this.conn.seconds = Math.max(0, Math.ceil((this.conn.retryAt - this.now) / 1000));
        }
        this.store.expireTyping(this.now);
      },

      reconnectNow: function () { if (this.socket) this.socket.reconnectNow(); },

      /** Tell the server (and so the sender) that the open conversation is read to its end. */
      markRead: function (conv) {
        if (!conv || conv.key !== this.activeKey || document.visibilityState !== 'visible') return;
        var last = this.store.newestId(conv);
        conv.unread = 0;
        conv.mentions = 0;
        if (!last || last <= conv.sentReadId) return;
        if (this.socket && this.socket.sendRaw({ cmd: CMD.READ, tcmd: conv.cmd, dstid: conv.dstid, id: last })) {
          this.store.markedRead(conv, last);
        }
      },

      // ---- conversations ----------------------------------------------------------------

      openConversation: function (cmd, dstid) {
        var self = this;
        var conv = this.store.ensureConv(cmd, dstid);
        this.activeKey = conv.key;
        this.panel = null;
        this.tab = this.tab === 'contacts' && !IM.ui.isPhone() ? 'contacts' : 'chats';
        if (cmd === CMD.SINGLE) this.loaders.user(dstid);
        if (cmd === CMD.GROUP) this.loadMembers(dstid);
        var first = conv.loaded ? Promise.resolve() : this.loadHistory(conv, true);
        first.then(function () {
          self.$nextTick(function () {
            if (self.$refs.pane && self.activeKey === conv.key) self.$refs.pane.opened(conv);
            self.markRead(conv);
          });
        });
        this.loaders.receipts(conv);
      },

      /** Open a conversation at one of its messages (a search result), with its neighbours. */
      openAt: function (cmd, dstid, id) {
        var self = this;
        var conv = this.store.ensureConv(cmd, dstid);
        this.activeKey = conv.key;
        this.panel = null;
        if (cmd === CMD.SINGLE) this.loaders.user(dstid);
        if (cmd === CMD.GROUP) this.loadMembers(dstid);
        var present = conv.messages.some(function (m) { return m.id === id; });
        var page = present ? Promise.resolve() : this.loaders.around(conv, id).then(null, function (error) { ui.toast(error.message, 'error'); });
        page.then(function () {
          self.$nextTick(function () {
            if (self.$refs.pane && self.activeKey === conv.key) self.$refs.pane.showMessage(id);
          });
        });
        this.loaders.receipts(conv);
      },

      /** Leave a page opened around a search result for the newest messages. */
      jumpToLatest: function () {
        var self = this;
        var conv = this.active;
        if (!conv) return;
        this.store.replaceMessages(conv, []);
        conv.gapAfter = false;
        conv.hasMore = true;
        this.loadHistory(conv, true).then(function () {
          self.$nextTick(function () { if (self.$refs.pane) self.$refs.pane.opened(conv); });
        });
      },

      // ---- message search -----------------------------------------------------------------

      openSearch: function (scope, q) {
        var search = this.search;
        search.open = true;
        search.scope = scope || null;
        if (q !== undefined) search.q = q;
        search.rows = [];
        search.ran = false;
        search.error = '';
        // On a phone the sidebar (where the results are) is hidden behind an open chat.
        if (IM.ui.isPhone()) this.activeKey = null;
        if (search.q) this.runSearch(false);
      },

      closeSearch: function () {
        this.search.open = false;
        this.search.rows = [];
      },

      runSearch: function (more) {
        var self = this;
        var search = this.search;
        var q = search.q.trim();
        if (!q || search.loading) return;
        search.loading = true;
        search.error = '';
        var asked = q;
        this.loaders.search(q, search.scope, more ? search.nextBefore : null).then(function (answer) {
          if (asked !== search.q.trim()) return;
          search.rows = more ? search.rows.concat(answer.rows) : answer.rows;
          search.more = !!answer.more;
          search.nextBefore = answer.next_before || null;
          search.ran = true;
        }, function (error) {
          search.error = error.message;
          search.ran = true;
        }).finally(function () { search.loading = false; });
      },

      closeConversation: function () {
        this.activeKey = null;
        this.panel = null;
      },

      loadHistory: function (conv, initial) {
        return this.loaders.history(conv, initial).then(null, function (error) { ui.toast(error.message, 'error'); });
      },

      loadMembers: function (groupId) {
        return this.loaders.members(groupId).then(null, function (error) { ui.toast(error.message, 'error'); });
      },

      toggleMembers: function () {
        this.showMembers = !this.showMembers;
        if (this.showMembers && this.active) this.loadMembers(this.active.dstid);
      },

      // ---- sending ----------------------------------------------------------------------

      /** Send a chat message: shown at once, kept in the outbox until acknowledged. */
      send: function (fields) {
        var conv = this.active;
        if (!conv || !this.socket) return;
        var frame = Object.assign({
          cmd: conv.cmd, dstid: conv.dstid, media: MEDIA.TEXT, content: '', pic: '', url: '', memo: '', amount: 0,
          cid: IM.util.newCid(this.me.id)
        }, fields);
        this.store.addPending(frame, Date.now());
        this.socket.sendMessage(frame);
        if (this.$refs.pane) this.$refs.pane.afterNewMessage(true);
      },

      retry: function (msg) {
        if (this.socket) this.socket.sendMessage(this.store.retryFrame(msg));
      },

      openPictureDialog: function (file) {
        this.pictureDraft = { file: file, name: file.name, size: file.size, preview: URL.createObjectURL(file), conv: this.activeKey };
        this.dialog = 'picture';
      },

      closePictureDialog: function () {
        if (this.pictureDraft) URL.revokeObjectURL(this.pictureDraft.preview);
        this.pictureDraft = null;
        this.dialog = null;
      },

      openDialog: function (name) { this.dialog = name; },

      openProfile: function () { this.dialog = 'profile'; },

      /** The people dialog on one of its tabs: find, requests or blocked. */
      openPeople: function (tab) {
        this.peopleTab = tab || 'find';
        this.dialog = 'people';
      },

      meChanged: function (user) {
        this.store.rememberUser(user);
        this.$emit('me-changed', user);
      },

      // ---- notifications ----------------------------------------------------------------

      notify: function (conv, msg) {
        if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
        var self = this;
        var view = this.view;
        try {
          var title = conv.cmd === CMD.GROUP ? view.convName(conv) + ' · ' + view.userName(msg.userid) : view.userName(msg.userid);
          var note = new Notification(title, {
            body: view.previewOf(msg).slice(0, 140),
            tag: conv.key,
            icon: IM.util.safeMediaUrl(view.userAvatar(msg.userid)) || '/asset/img/logo.svg'
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
        IM.util.api('/user/me', {}).then(null, function (error) { if (error.status === 401) self.sessionEnded(); });
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
        IM.util.api('/user/logout', {}).then(null, function () { /* the cookie is cleared anyway */ }).then(function () {
          self.dialog = null;
          self.$emit('logged-out');
        });
      }
    }
  };
})();
