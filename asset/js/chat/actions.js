/* imchat web client: what a person does to a message or a conversation besides sending —
 * reply (quote it in the composer, jump to it), recall, edit, react, and mute — as a mixin
 * of the chat app (components/chat-app.js). Changes go through the socket's outbox like
 * messages (stored at most once by `cid`); the server does not send a device its own change
 * back, so each is applied here when its acknowledgement arrives. */
(function () {
  'use strict';

  var P = IM.protocol;
  var CMD = P.CMD;
  var REL = P.REL;

  IM.chatActions = {
    data: function () {
      return {
        menuFor: 0,           // the message whose action menu is open (id)
        editing: null         // { id, text } while a message is being edited
      };
    },
    created: function () {
      this.pendingChanges = {};   // cid -> the entry to apply once acknowledged
    },
    methods: {
      openMenu: function (msg) { this.menuFor = this.menuFor === msg.id ? 0 : msg.id; },

      closeMenu: function () { this.menuFor = 0; },

      isGroupOwner: function (conv) {
        var group = conv && conv.cmd === CMD.GROUP ? this.store.groupOf(conv.dstid) : null;
        return !!group && group.ownerid === this.me.id;
      },

      /** What the server will allow (it has the last word, with a reason). */
      mayRecall: function (conv, msg) {
        return !!msg.id && !msg.recalled && (msg.userid === this.me.id || this.isGroupOwner(conv));
      },

      mayEdit: function (msg) {
        return !!msg.id && !msg.recalled && msg.userid === this.me.id && msg.media === P.MEDIA.TEXT;
      },

      sendChange: function (conv, frame, entry) {
        if (!this.socket) return;
        frame.cid = IM.util.newCid(this.me.id);
        this.pendingChanges[frame.cid] = Object.assign({ userid: this.me.id, cmd: conv.cmd, dstid: conv.dstid, media: P.MEDIA.TEXT }, entry);
        this.socket.sendMessage(frame);
        this.menuFor = 0;
      },

      /** Our change was stored: apply it as the other devices do. */
      changeAcked: function (ack) {
        var entry = this.pendingChanges[ack.cid];
        if (!entry) return;
        delete this.pendingChanges[ack.cid];
        this.store.receive(Object.assign({}, entry, { id: ack.id, ts: ack.ts }));
      },

      recall: function (msg) {
        var conv = this.active;
        this.sendChange(conv, { cmd: CMD.RECALL, ref: msg.id }, { rel: REL.RECALL, ref: msg.id, content: '' });
      },

      startEdit: function (msg) {
        this.editing = { id: msg.id, text: msg.content || '' };
        this.menuFor = 0;
      },

      saveEdit: function (msg) {
        var text = this.editing ? this.editing.text.replace(/\s+$/, '') : '';
        this.editing = null;
        if (!text.trim() || text === msg.content) return;
        this.sendChange(this.active, { cmd: CMD.EDIT, ref: msg.id, content: text }, { rel: REL.EDIT, ref: msg.id, text: text });
      },

      /** Toggle my reaction `emoji` on a message. */
      react: function (msg, emoji) {
        var on = !IM.relations.reactedBy(msg, emoji, this.me.id);
        this.sendChange(this.active, { cmd: CMD.REACT, ref: msg.id, emoji: emoji, on: on ? 1 : 0 },
          { rel: on ? REL.REACT : REL.UNREACT, ref: msg.id, text: emoji });
      },

      replyTo: function (msg) {
        var conv = this.active;
        conv.replyTo = { id: msg.id, userid: msg.userid, content: msg.content || '', media: msg.media };
        this.menuFor = 0;
        if (this.$refs.pane && this.$refs.pane.$refs.composer) this.$refs.pane.$refs.composer.focus();
      },

      cancelReply: function () { if (this.active) this.active.replyTo = null; },

      /** Show the message a reply answers, loading its part of the history if need be. */
      jumpTo: function (id) {
        var conv = this.active;
        if (conv && id) this.openAt(conv.cmd, conv.dstid, id);
      },

      toggleMute: function (conv) {
        var self = this;
        IM.util.api('/message/mute', { cmd: conv.cmd, dstid: conv.dstid, muted: conv.muted ? 0 : 1 }).then(function (answer) {
          conv.muted = !!answer.data.muted;
          IM.ui.toast(conv.muted ? self.t('mutedToast') : self.t('unmutedToast'));
        }, function (error) { IM.ui.toast(error.message, 'error'); });
      },

      /** Another device of mine (un)muted a conversation. */
      applyMute: function (frame) {
        this.store.ensureConv(frame.tcmd, frame.dstid).muted = !!frame.muted;
      }
    }
  };
})();
