/* imchat web client: the composer under the open conversation — the text box (Enter sends,
 * Shift+Enter breaks the line), the message being replied to, the @ picker of group members
 * (and @all for the group's owner), the emoji and sticker pickers, choosing a picture or any
 * file to send, the microphone (components/voice-button.js), and the typing notices that tell
 * the peer(s) this user is writing. */
(function () {
  'use strict';

  var CMD = IM.protocol.CMD;
  var MEDIA = IM.protocol.MEDIA;
  var TYPING_SEND_EVERY_MS = 3000;  // while typing goes on, say so again this often
  var TYPING_MIN_GAP_MS = 600;       // the server drops notices closer than 0.5 s

  IM.components = IM.components || {};
  IM.components.Composer = {
    render: IM.templates.composer,
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () {
      return {
        emojiGroup: IM.emoji.groups[0].id, stickerPack: null, accept: IM.upload.ACCEPT, uploading: false,
        mention: null      // { query, start } while an @name is being typed in a group
      };
    },
    computed: {
      conv: function () { return this.chat.active; },
      emojiGroups: function () { return IM.emoji.groups; },
      currentEmoji: function () {
        var id = this.emojiGroup;
        return (IM.emoji.groups.filter(function (g) { return g.id === id; })[0] || IM.emoji.groups[0]).chars;
      },
      currentPack: function () {
        var id = this.stickerPack;
        var packs = this.chat.stickerPacks;
        return packs.filter(function (p) { return p.id === id; })[0] || packs[0] || null;
      },
      currentStickers: function () { return this.currentPack ? this.currentPack.assets : []; },
      /** Members whose name starts with what follows the @ (and "all" for the owner). */
      mentionChoices: function () {
        var mention = this.mention;
        var conv = this.conv;
        if (!mention || conv.cmd !== CMD.GROUP) return [];
        var me = this.chat.me.id;
        var query = mention.query.toLowerCase();
        var view = this.chat.view;
        var choices = (this.chat.state.members[conv.dstid] || []).filter(function (u) {
          return u.id !== me && view.userName(u.id).toLowerCase().indexOf(query) === 0;
        }).slice(0, 8).map(function (u) { return { id: u.id, name: view.userName(u.id) }; });
        var all = this.t('mentionAll');
        if (this.chat.isGroupOwner(conv) && all.toLowerCase().indexOf(query) === 0) choices.push({ id: 0, name: all });
        return choices;
      }
    },
    watch: {
      'chat.activeKey': function () { this.typingRestart(); }
    },
    created: function () {
      this.lastTypingAt = 0;     // when the last typing notice went out
      this.nextTypingAt = 0;     // the earliest time for the next one
      this.typingTimer = null;
    },
    unmounted: function () { clearTimeout(this.typingTimer); },
    methods: {
      focus: function () { if (this.$refs.input) this.$refs.input.focus(); },

      sendText: function () {
        var conv = this.conv;
        var text = conv.draft.replace(/\s+$/, '');
        if (!text.trim()) return;
        conv.draft = '';
        var fields = { media: MEDIA.TEXT, content: text };
        if (conv.replyTo) fields.ref = conv.replyTo.id;
        conv.replyTo = null;
        Object.assign(fields, this.mentionsIn(conv, text));
        this.mention = null;
        this.chat.send(fields);
        // Keep the emoji picker open for the next message on wide screens; on a phone it
        // would cover the conversation.
        this.chat.panel = this.chat.panel === 'emoji' && !IM.ui.isPhone() ? 'emoji' : null;
        this.typingRestart();
        var input = this.$refs.input;
        this.$nextTick(function () { if (input) { input.style.height = ''; input.focus(); } });
      },

      sendSticker: function (url) {
        if (!IM.util.isStickerUrl(url)) return;
        this.chat.send({ media: MEDIA.PICTURE, url: url });
        if (IM.ui.isPhone()) this.chat.panel = null;
      },

      onKeydown: function (event) {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
          event.preventDefault();
          this.sendText();
        }
      },

      onInput: function (event) {
        var el = event.target;
        this.findMention(el);
        el.style.height = 'auto';
        el.style.height = Math.min(el.scrollHeight, 160) + 'px';
        this.announceTyping();
      },

      /** Tell the peer(s) that this user is typing: at once, then every few seconds. */
      announceTyping: function () {
        var conv = this.conv;
        var self = this;
        if (!conv || !conv.draft.trim() || !this.chat.socket) return;
        var now = Date.now();
        if (now >= this.nextTypingAt) {
          if (this.chat.socket.sendRaw({ cmd: CMD.TYPING, tcmd: conv.cmd, dstid: conv.dstid })) {
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

      /** An "@name" being typed just before the cursor opens the member picker. */
      findMention: function (el) {
        var before = el.value.slice(0, el.selectionStart);
        var match = this.conv.cmd === CMD.GROUP ? /(^|\s)@([^\s@]{0,20})$/.exec(before) : null;
        this.mention = match ? { query: match[2], start: before.length - match[2].length - 1 } : null;
      },

      pickMention: function (choice) {
        var conv = this.conv;
        var mention = this.mention;
        var input = this.$refs.input;
        var text = '@' + choice.name + ' ';
        var end = mention.start + 1 + mention.query.length;
        conv.draft = conv.draft.slice(0, mention.start) + text + conv.draft.slice(end);
        var picked = Object.assign({}, conv.picked || {});
        picked[choice.name] = choice.id;
        conv.picked = picked;
        this.mention = null;
        this.$nextTick(function () {
          if (!input) return;
          input.focus();
          input.selectionStart = input.selectionEnd = mention.start + text.length;
        });
      },

      /** `at` / `atall` for the names picked that are still in the text. */
      mentionsIn: function (conv, text) {
        var picked = conv.picked || {};
        var fields = {};
        var at = Object.keys(picked).filter(function (name) {
          return picked[name] && text.indexOf('@' + name) !== -1;
        }).map(function (name) { return picked[name]; });
        if (at.length) fields.at = at;
        if (Object.keys(picked).some(function (name) { return picked[name] === 0 && text.indexOf('@' + name) !== -1; })) fields.atall = 1;
        conv.picked = {};
        return fields;
      },

      togglePanel: function (name) {
        this.chat.panel = this.chat.panel === name ? null : name;
      },

      insertEmoji: function (ch) {
        var conv = this.conv;
        var input = this.$refs.input;
        var start = input ? input.selectionStart : conv.draft.length;
        var end = input ? input.selectionEnd : conv.draft.length;
        conv.draft = conv.draft.slice(0, start) + ch + conv.draft.slice(end);
        this.$nextTick(function () {
          if (!input) return;
          input.focus();
          input.selectionStart = input.selectionEnd = start + ch.length;
        });
      },

      /** Any file: uploaded at once, then sent as a file message (name, size, type). */
      pickFile: function (event) {
        var self = this;
        var file = IM.upload.pickedFile(event);
        if (!file) return;
        var conv = this.chat.activeKey;
        this.uploading = true;
        IM.upload.uploadFile(file).then(function (stored) {
          if (self.chat.activeKey !== conv) self.chat.activeKey = conv;
          self.chat.send({ media: MEDIA.FILE, url: stored.url, pic: stored.thumb || '', content: stored.name,
            amount: stored.size, memo: stored.mime });
        }, function (error) { IM.ui.toast(error.message, 'error'); })
          .then(function () { self.uploading = false; });
      },

      pickPicture: function (event) {
        var file = IM.upload.pickedFile(event);
        if (!file) return;
        if (!IM.upload.accepts(file)) { IM.ui.toast(this.t('onlyPictures'), 'error'); return; }
        this.chat.openPictureDialog(file);
      }
    }
  };
})();
