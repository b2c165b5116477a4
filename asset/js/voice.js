/* imchat web client: recording a voice clip with the browser's MediaRecorder. Browsers give
 * the microphone only to secure pages (https, or this machine), and only when the person
 * allows it: `supported()` says whether to offer recording at all. */
(function () {
  'use strict';

  // The first of these the browser records: Chromium and Firefox Opus, Safari AAC in MP4.
  var TYPES = [['audio/webm;codecs=opus', 'webm'], ['audio/ogg;codecs=opus', 'ogg'], ['audio/mp4', 'm4a'], ['audio/webm', 'webm']];

  function supported() {
    return !!(window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia &&
      typeof window.MediaRecorder === 'function');
  }

  function pickType() {
    for (var i = 0; i < TYPES.length; i++) {
      if (!MediaRecorder.isTypeSupported || MediaRecorder.isTypeSupported(TYPES[i][0])) return TYPES[i];
    }
    return ['', 'webm'];
  }

  /** Start recording; resolves with {stop(): Promise<{blob, name, seconds}>, cancel()}. */
  function start() {
    return navigator.mediaDevices.getUserMedia({ audio: true }).then(function (stream) {
      var type = pickType();
      var recorder = new MediaRecorder(stream, type[0] ? { mimeType: type[0] } : undefined);
      var chunks = [];
      var startedAt = Date.now();
      var finished = new Promise(function (resolve) {
        recorder.ondataavailable = function (event) { if (event.data && event.data.size) chunks.push(event.data); };
        recorder.onstop = function () {
          stream.getTracks().forEach(function (track) { track.stop(); });
          resolve();
        };
      });
      recorder.start(250);
      function end() {
        if (recorder.state !== 'inactive') recorder.stop();
        return finished;
      }
      return {
        startedAt: startedAt,
        stop: function () {
          var seconds = Math.max(1, Math.round((Date.now() - startedAt) / 1000));
          return end().then(function () {
            var blob = new Blob(chunks, { type: recorder.mimeType || type[0] || 'audio/webm' });
            return { blob: blob, name: 'voice.' + type[1], seconds: seconds };
          });
        },
        cancel: function () { end(); }
      };
    });
  }

  window.IM = window.IM || {};
  window.IM.voice = { supported: supported, start: start };
})();
