/* imchat web client: the composer's microphone — press and hold to record a voice clip,
 * release to send it, slide off the button (or press Escape) to throw it away. Shown only
 * where the browser lets pages record (https or this machine; see IM.voice). */
(function () {
  'use strict';

  var MEDIA = IM.protocol.MEDIA;
  var MIN_MS = 700;            // shorter presses are taps, not clips
  var MAX_SECONDS = 120;       // a clip stops by itself after this long

  IM.components = IM.components || {};
  IM.components.VoiceButton = {
    render: IM.templates['voice-button'],
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () { return { supported: IM.voice.supported(), recording: null, seconds: 0, sending: false }; },
    unmounted: function () { this.cancel(); },
    methods: {
      start: function (event) {
        var self = this;
        if (event && event.preventDefault) event.preventDefault();
        if (this.recording || this.sending) return;
        this.recording = 'starting';
        this.pressedAt = Date.now();
        IM.voice.start().then(function (recording) {
          if (self.recording !== 'starting') { recording.cancel(); return; }   // released meanwhile
          self.recording = recording;
          self.seconds = 0;
          self.timer = setInterval(function () {
            self.seconds = Math.round((Date.now() - recording.startedAt) / 1000);
            if (self.seconds >= MAX_SECONDS) self.finish();
          }, 250);
        }, function () {
          self.recording = null;
          IM.ui.toast(self.t('microphoneDenied'), 'error');
        });
      },

      /** Released: send the clip, unless the press was too short to be one. */
      finish: function () {
        var self = this;
        var recording = this.recording;
        clearInterval(this.timer);
        this.recording = null;
        if (!recording || recording === 'starting') return;
        if (Date.now() - this.pressedAt < MIN_MS) {
          recording.cancel();
          IM.ui.toast(this.t('holdToRecord'), 'info');
          return;
        }
        var conv = this.chat.activeKey;
        this.sending = true;
        recording.stop().then(function (clip) {
          return IM.upload.uploadVoice(clip.blob, clip.name).then(function (voice) {
            if (self.chat.activeKey !== conv) self.chat.activeKey = conv;
            self.chat.send({ media: MEDIA.VOICE, url: voice.url, amount: clip.seconds });
          });
        }).then(null, function (error) { IM.ui.toast(error.message, 'error'); })
          .then(function () { self.sending = false; });
      },

      cancel: function () {
        clearInterval(this.timer);
        if (this.recording && this.recording !== 'starting') this.recording.cancel();
        this.recording = null;
      },

      onKeydown: function (event) {
        if (event.key === 'Escape') this.cancel();
        else if ((event.key === ' ' || event.key === 'Enter') && !event.repeat) this.start(event);
      },

      onKeyup: function (event) {
        if (event.key === ' ' || event.key === 'Enter') this.finish();
      }
    }
  };
})();
