/* imchat web client: what replies, mentions and the entries that change a message (edit,
 * recall, reaction) do to the store's state, with no DOM. An entry is applied to the message
 * it names when that message is loaded (history answers the others in their current state);
 * it is never shown as a message of its own, never unread, never a conversation's last. */
(function (IM) {
  'use strict';

  var P = IM.protocol;
  var REL = P.REL;

  function findById(conv, id) {
    for (var i = conv.messages.length - 1; i >= 0; i--) if (conv.messages[i].id === id) return conv.messages[i];
    return null;
  }

  /** Apply an entry to the message it changes (when loaded); true when something changed. */
  function apply(conv, entry) {
    var target = findById(conv, entry.ref);
    if (!target) return false;
    if (entry.rel === REL.RECALL) {
      Object.assign(target, { recalled: 1, media: P.MEDIA.TEXT, content: entry.content, url: '', pic: '', reactions: [], at: [], atall: 0 });
    } else if (entry.rel === REL.EDIT && !target.recalled) {
      target.content = entry.text;
      target.edited = entry.ts;
    } else if (entry.rel === REL.REACT || entry.rel === REL.UNREACT) {
      setReaction(target, entry.text, entry.userid, entry.rel === REL.REACT);
    }
    return true;
  }

  /** Reactions as the server answers them: [{emoji, users}] in the fixed order. */
  function setReaction(msg, emoji, userId, on) {
    var byEmoji = {};
    (msg.reactions || []).forEach(function (r) { byEmoji[r.emoji] = r.users.slice(); });
    var users = byEmoji[emoji] || [];
    var at = users.indexOf(userId);
    if (on && at === -1) users.push(userId);
    if (!on && at !== -1) users.splice(at, 1);
    byEmoji[emoji] = users;
    msg.reactions = P.REACTIONS.filter(function (e) { return byEmoji[e] && byEmoji[e].length; })
      .map(function (e) { return { emoji: e, users: byEmoji[e] }; });
  }

  function reactedBy(msg, emoji, userId) {
    return (msg.reactions || []).some(function (r) { return r.emoji === emoji && r.users.indexOf(userId) !== -1; });
  }

  /** Whether a message calls this user (by id, or everyone). */
  function mentions(msg, userId) {
    return !!(msg.atall || (msg.at && msg.at.indexOf(userId) !== -1));
  }

  /** What a reply shows of the message it answers: the loaded one, else what the server sent. */
  function quoteOf(conv, msg) {
    if (!msg.ref || (msg.rel && msg.rel !== REL.REPLY)) return null;   // pending: no rel yet
    var original = findById(conv, msg.ref);
    if (original) return { id: original.id, userid: original.userid, media: original.media, content: original.content || '', recalled: original.recalled };
    return msg.quote || { id: msg.ref, userid: 0, media: P.MEDIA.TEXT, content: '' };
  }

  IM.relations = Object.freeze({
    apply: apply, setReaction: setReaction, reactedBy: reactedBy, mentions: mentions,
    quoteOf: quoteOf, findById: findById
  });
})(globalThis.IM = globalThis.IM || {});
