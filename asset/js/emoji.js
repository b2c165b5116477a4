/* imchat web client: the emoji picker's Unicode emoji, in a few groups. Inserting one puts
 * the character itself into the message text (no pictures involved). */
(function () {
  'use strict';

  // Older symbols (❤ ☀ ✌ ...) are drawn as plain text unless followed by VS16 (U+FE0F).
  function split(text) {
    return Array.from(text.replace(/\s+/g, '')).map(function (ch) {
      return ch.codePointAt(0) < 0x1f000 ? ch + '\ufe0f' : ch;
    });
  }

  var GROUPS = [
    { id: 'smileys', icon: '😀', chars: split(
      '😀😃😄😁😆😅🤣😂🙂🙃😉😊😇🥰😍🤩😘😗😚😙😋😛😜🤪😝🤑🤗🤭🤫🤔🤐🤨😐😑😶😏😒🙄😬😌😔😪🤤😴😷🤒🤕🤢🤮🥵🥶🥴😵🤯🤠🥳😎🤓🧐😕😟🙁😮😯😲😳🥺😦😧😨😰😥😢😭😱😖😣😞😓😩😫🥱😤😡😠🤬😈💀💩🤡👻👽🤖') },
    { id: 'gestures', icon: '👍', chars: split(
      '👍👎👌✌🤞🤟🤘🤙👈👉👆👇☝👋🤚🖐✋🖖👏🙌👐🤲🤝🙏✍💪🦾👀🧠❤🧡💛💚💙💜🖤🤍🤎💔❣💕💞💓💗💖💘💝') },
    { id: 'things', icon: '🎉', chars: split(
      '🎉🎊🎈🎁🎂🍰☕🍵🍺🍻🥂🍷🍜🍚🍣🍕🍔🍟🍎🍉🍓🍒🌹🌸🌻🍀🌈☀🌙⭐🔥💧⚡❄☔⛄🎵🎶📷💡📌📎✏📅📈⏰💼💰🏆🥇⚽🏀🎮🚀✈🚗🏠✅❌❓❗💯🆗🆒') }
  ];

  window.IM = window.IM || {};
  window.IM.emoji = { groups: GROUPS };
})();
