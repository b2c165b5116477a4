/* imchat web client: how the store's state reads to a person — names, avatars, list previews,
 * the rows of a conversation (time separators, bubbles, read labels), typing lines and the
 * filtered lists. Pure functions of the store and a translator `t`; no DOM, so they run in node. */
(function (IM) {
  'use strict';

  var CMD = IM.protocol.CMD;
  var MEDIA = IM.protocol.MEDIA;
  var util = IM.util;
  var GROUP_GAP_MS = 5 * 60 * 1000;   // a time separator after this long a pause

  /** Which kind of bubble a message is, and its safe media URLs. */
  function describe(msg) {
    if (msg.media === MEDIA.TEXT) return { kind: 'text' };
    if (msg.media === MEDIA.PICTURE) {
      var url = util.safeMediaUrl(msg.url);
      if (!url) return { kind: 'unsupported' };
      if (util.isStickerUrl(url)) return { kind: 'sticker', src: url };
      return { kind: 'picture', src: url, thumb: util.safeMediaUrl(msg.pic) || url };
    }
    if (msg.media === MEDIA.VOICE) {
      var voice = util.safeMediaUrl(msg.url);
      return voice ? { kind: 'voice', src: voice } : { kind: 'unsupported' };
    }
    if (msg.media === MEDIA.FILE) {
      var file = util.safeMediaUrl(msg.url);
      if (!file) return { kind: 'unsupported' };
      return { kind: 'file', src: file, thumb: util.safeMediaUrl(msg.pic), name: String(msg.content || ''),
        size: +msg.amount || 0, mime: String(msg.memo || '') };
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

  function createView(store, t) {
    var state = store.state;

    /** A group notice (MEDIA.NOTICE) in the reader's language: "{actor} removed {target}". */
    function noticeText(msg) {
      var memo = String(msg.memo || '');
      var cut = memo.indexOf(':');
      var event = cut === -1 ? memo : memo.slice(0, cut);
      if (IM.protocol.GROUP_EVENTS.indexOf(event) === -1) return msg.content || '';
      var key = 'notice_' + event;   // i18n.js: one key per event
      return t(key, {
        actor: userName(msg.userid), target: msg.amount ? userName(msg.amount) : '',
        value: cut === -1 ? '' : memo.slice(cut + 1)
      });
    }

    function previewOf(msg) {
      if (!msg) return '';
      if (msg.media === MEDIA.NOTICE) return noticeText(msg);
      if (msg.recalled) return t('recalledPreview');
      if (msg.media === MEDIA.TEXT) return msg.content || '';
      if (msg.media === MEDIA.PICTURE) return util.isStickerUrl(msg.url) ? t('stickerPreview') : t('picturePreview');
      if (msg.media === MEDIA.VOICE) return t('voicePreview');
      if (msg.media === MEDIA.FILE) return t('filePreview', { name: msg.content || '' });
      return msg.content || t('unsupported');
    }

    function userName(id) {
      if (id === state.me.id) return state.me.nickname || state.me.mobile;
      var user = state.users[id];
      return user ? (user.nickname || user.mobile) : '#' + id;
    }

    function userAvatar(id) {
      if (id === state.me.id) return state.me.avatar;
      var user = state.users[id];
      return user ? user.avatar : '';
    }

    function convName(conv) {
      if (conv.cmd !== CMD.GROUP) return userName(conv.dstid);
      var group = store.groupOf(conv.dstid);
      return group ? group.name : '#' + conv.dstid;
    }

    function convAvatar(conv) {
      if (conv.cmd !== CMD.GROUP) return userAvatar(conv.dstid);
      var group = store.groupOf(conv.dstid);
      return group ? group.icon : '';
    }

    function preview(conv) {
      if (!conv.last) return '';
      var text = previewOf(conv.last);
      if (conv.last.userid === state.me.id) return t('you') + ': ' + text;
      if (conv.cmd === CMD.GROUP) return userName(conv.last.userid) + ': ' + text;
      return text;
    }

    function typingText(conv, now) {
      var ids = Object.keys(conv.typing).filter(function (uid) { return conv.typing[uid] >= now; });
      if (!ids.length) return '';
      if (conv.cmd === CMD.SINGLE) return t('typing', { name: userName(conv.dstid) });
      return t('typing', { name: ids.map(function (uid) { return userName(+uid); }).join(', ') });
    }

    /** "Read"/"Unread" for a one-to-one message; "n read"/"All read" in a group. */
    function readLabel(conv, msg) {
      if (conv.cmd === CMD.SINGLE) {
        var done = (conv.peerRead[conv.dstid] || 0) >= msg.id;
        return { done: done, text: done ? t('read') : t('unread') };
      }
      var me = state.me.id;
      var count = 0;
      Object.keys(conv.peerRead).forEach(function (uid) {
        if (+uid !== me && conv.peerRead[uid] >= msg.id) count += 1;
      });
      var members = state.members[conv.dstid];
      if (members && members.length > 1 && count >= members.length - 1) return { done: true, text: t('allRead') };
      return { done: count > 0, text: count ? t('readBy', { n: count }) : t('unread') };
    }

    /** A conversation as display rows: time separators and messages. */
    function rows(conv, now) {
      var out = [];
      var previous = null;
      var me = state.me.id;
      conv.messages.forEach(function (msg) {
        var ts = msg.ts || now;
        if (!previous || ts - (previous.ts || ts) > GROUP_GAP_MS) {
          out.push({ type: 'time', key: 't' + (msg.id || msg.cid), ts: ts });
          previous = null;
        }
        if (msg.media === MEDIA.NOTICE) {
          // A line across the pane, not a bubble; the next message starts a new run.
          out.push({ type: 'notice', key: 'i' + msg.id, msg: msg, text: noticeText(msg) });
          previous = null;
          return;
        }
        var info = describe(msg);
        var mine = msg.userid === me;
        out.push({
          type: 'msg',
          key: msg.cid ? 'c' + msg.userid + ':' + msg.cid : 'i' + msg.id,
          msg: msg,
          mine: mine,
          first: !previous || previous.userid !== msg.userid,
          kind: info.kind,
          src: info.src,
          thumb: info.thumb,
          file: info.kind === 'file' ? info : null,
          size: info.kind === 'picture' ? pictureSize(msg) : null,
          readLabel: mine && msg.id ? readLabel(conv, msg) : null,
          quote: IM.relations.quoteOf(conv, msg),
          mentionsMe: !mine && IM.relations.mentions(msg, me)
        });
        previous = msg;
      });
      return out;
    }

    /** "You recalled a message" / "Ann recalled a message". */
    function recalledText(msg) {
      return msg.userid === state.me.id ? t('youRecalled') : t('recalled', { name: userName(msg.userid) });
    }

    /** Who reacted with one emoji, by name, for its tooltip. */
    function reactionNames(reaction) {
      return reaction.users.map(userName).join(', ');
    }

    function matches(text, needle) { return !needle || String(text).toLowerCase().indexOf(needle) !== -1; }

    /** Conversations with something in them (or open), newest first. */
    function conversationList(filter, activeKey) {
      var needle = filter.trim().toLowerCase();
      return Object.keys(state.convs).map(function (key) { return state.convs[key]; })
        .filter(function (conv) { return conv.lastTs || conv.key === activeKey || conv.messages.length; })
        .filter(function (conv) { return matches(convName(conv), needle); })
        .sort(function (a, b) { return (b.lastTs || 0) - (a.lastTs || 0) || (b.lastId || 0) - (a.lastId || 0); });
    }

    /** Friends matching the filter, online ones first, then by name. */
    function friends(filter) {
      var needle = filter.trim().toLowerCase();
      return state.friends.filter(function (f) { return matches(f.nickname + ' ' + f.mobile, needle); })
        .sort(function (a, b) {
          return (state.online[b.id] ? 1 : 0) - (state.online[a.id] ? 1 : 0) || (a.nickname || a.mobile).localeCompare(b.nickname || b.mobile);
        });
    }

    function groups(filter) {
      var needle = filter.trim().toLowerCase();
      return state.groups.filter(function (g) { return matches(g.name, needle); });
    }

    return {
      previewOf: previewOf, noticeText: noticeText, userName: userName, userAvatar: userAvatar, convName: convName,
      convAvatar: convAvatar, preview: preview, typingText: typingText, readLabel: readLabel,
      rows: rows, recalledText: recalledText, reactionNames: reactionNames,
      conversationList: conversationList, friends: friends, groups: groups
    };
  }

  IM.createView = createView;
  IM.describeMessage = describe;
})(globalThis.IM = globalThis.IM || {});
