/* imchat web client: the wire vocabulary of the /chat WebSocket (protocol v2) — every frame
 * `cmd`, message `media` kind and close code the client uses, named once. The server's side
 * is checked against this file by tests/test_client_protocol.py, so the two cannot drift.
 * Plain JavaScript with no DOM: it loads in a page and in node alike. */
(function (IM) {
  'use strict';

  var VERSION = 2;      // /chat?v=2: the protocol these frames belong to

  var CMD = Object.freeze({
    HEARTBEAT: 0,       // both ways: keep-alive; the server answers in kind
    SINGLE: 10,         // a one-to-one chat message
    GROUP: 11,          // a group chat message
    ACK: 100,           // server -> sender: your message (by `cid`) is stored as `id`
    REFUSED: 101,       // server -> client: a frame was refused (`reason`, `msg`, `cid`)
    READ: 102,          // both ways: read up to `id` in a conversation (`tcmd`, `dstid`)
    TYPING: 103,        // both ways: typing notice (`tcmd`, `dstid`)
    PRESENCE: 104,      // server -> client: who is online (snapshot) or one user's change
    SYNC: 106,          // client -> server: send what I missed after message `since`
    SYNC_END: 107,      // server -> client: catch-up page sent up to `upto`; `more` to follow
    RESYNC: 108,        // server -> client: messages above `since` may have been missed: sync
    CONTACTS: 109,      // server -> client: friends, friend requests or blocks changed (`what`)
    RECALL: 110,        // client -> server: recall message `ref`
    EDIT: 111,          // client -> server: message `ref` now reads `content`
    REACT: 112,         // client -> server: my reaction `emoji` on `ref` on (`on` 1) or off (0)
    MUTE: 113,          // server -> client: I (un)muted a conversation on another device
    GROUP_ACTION: 114   // both ways: govern a group (`action`, `id`, ...); answered `ok`
  });

  // How a chat frame relates to the message `ref`: a reply answers it; the others are entries
  // of the log that change it (they are not messages of their own).
  var REL = Object.freeze({
    REPLY: 'reply', EDIT: 'edit', RECALL: 'recall', REACT: 'react', UNREACT: 'unreact'
  });

  // The reactions a message can get (the server refuses others).
  var REACTIONS = Object.freeze(['👍', '❤️', '😂', '😮', '😢', '🙏']);

  var MEDIA = Object.freeze({
    TEXT: 1,            // `content`
    VOICE: 3,           // `url` of an uploaded clip (recorded and played by the web client)
    PICTURE: 4,         // `url` (picture or built-in sticker), optional `pic` preview
    FILE: 6,            // `url`, `content` the file's name, `amount` its bytes, `memo` its type
    NOTICE: 120         // server-made group change: `memo` event[:value], `amount` the user
  });                   // it concerns, `url` a new icon, `content` a readable line

  // The events of a NOTICE (its `memo` up to the first ':').
  var GROUP_EVENTS = Object.freeze(['joined', 'added', 'left', 'removed', 'renamed', 'icon',
    'notice', 'private', 'public', 'admin', 'unadmin', 'owner', 'dissolved']);

  var CLOSE = Object.freeze({
    NORMAL: 1000,           // the client leaves (logout, page closed)
    SESSION_ENDED: 4001     // logged out, disabled or expired: do not reconnect
  });

  // Refusals that mean "not now" rather than "never": the message stays in the outbox and is
  // sent again shortly.
  var RETRY_REASONS = Object.freeze(['throttled', 'unavailable']);

  function isRetryable(reason) { return RETRY_REASONS.indexOf(reason) !== -1; }

  function isChat(cmd) { return cmd === CMD.SINGLE || cmd === CMD.GROUP; }

  /** An entry that changes an earlier message (edit, recall, reaction), not a message. */
  function isChange(msg) { return !!msg.rel && msg.rel !== REL.REPLY; }

  IM.protocol = Object.freeze({
    VERSION: VERSION, CMD: CMD, MEDIA: MEDIA, CLOSE: CLOSE, RETRY_REASONS: RETRY_REASONS,
    GROUP_EVENTS: GROUP_EVENTS,
    REL: REL, REACTIONS: REACTIONS, isRetryable: isRetryable, isChat: isChat, isChange: isChange
  });
})(globalThis.IM = globalThis.IM || {});
