/* imchat web client: the /chat WebSocket (protocol v2) with what makes it dependable —
 * reconnect with backoff and jitter, catch-up from the last seen message id (`since`, cmd
 * SYNC/SYNC_END), a heartbeat that notices dead links, and an outbox: a message is kept (also in
 * localStorage) until the server acknowledges its `cid` (cmd ACK), and resent after every
 * reconnect; the server stores a resend with the same `cid` only once. */
(function () {
  'use strict';

  var HEARTBEAT_MS = 25000;
  var SILENCE_MS = 65000;       // nothing received for this long: the link is dead
  var BACKOFF_FIRST_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var P = IM.protocol;
  var CMD = P.CMD;

  /**
   * options: userId, since (last seen message id), onFrame(frame), onState(state, info),
   * onSessionEnded(), onAck(ack), onRefused(frame). States: 'connecting', 'online',
   * 'reconnecting' (info.retryAt, info.attempt).
   */
  function ChatSocket(options) {
    this.options = options;
    this.userId = options.userId;
    this.since = options.since || 0;
    this.ws = null;
    this.state = 'idle';
    this.attempt = 0;
    this.retryTimer = null;
    this.heartbeatTimer = null;
    this.lastHeard = 0;
    this.stopped = false;
    this.outbox = new IM.Outbox(localStorageOrNull(), 'imchat.outbox.' + this.userId);
    var self = this;
    this.onOnline = function () { self.reconnectNow(); };
    this.onVisible = function () {
      if (document.visibilityState === 'visible' && self.state === 'reconnecting') self.reconnectNow();
    };
    window.addEventListener('online', this.onOnline);
    document.addEventListener('visibilitychange', this.onVisible);
  }

  ChatSocket.prototype.url = function () {
    var scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    return scheme + '://' + location.host + '/chat?v=' + P.VERSION + '&since=' + encodeURIComponent(String(this.since || 0));
  };

  ChatSocket.prototype.setState = function (state, info) {
    this.state = state;
    if (this.options.onState) this.options.onState(state, info || {});
  };

  ChatSocket.prototype.start = function () {
    this.stopped = false;
    this.connect();
  };

  ChatSocket.prototype.stop = function () {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.heartbeatTimer);
    window.removeEventListener('online', this.onOnline);
    document.removeEventListener('visibilitychange', this.onVisible);
    if (this.ws) {
      this.ws.onclose = null;
      try { this.ws.close(P.CLOSE.NORMAL, 'bye'); } catch (e) { /* already closed */ }
      this.ws = null;
    }
  };

  ChatSocket.prototype.connect = function () {
    var self = this;
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting', { attempt: this.attempt, connectingNow: true });
    var ws;
    try {
      ws = new WebSocket(this.url());
    } catch (e) {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = function () {
      if (self.ws !== ws) return;
      self.lastHeard = Date.now();
      self.attempt = 0;
      self.setState('online');
      clearInterval(self.heartbeatTimer);
      self.heartbeatTimer = setInterval(function () { self.beat(); }, HEARTBEAT_MS / 5);
      self.lastBeat = Date.now();
      self.flushOutbox();
    };
    ws.onmessage = function (event) {
      if (self.ws !== ws) return;
      self.lastHeard = Date.now();
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (!frame || typeof frame !== 'object') return;
      self.handle(frame);
    };
    ws.onclose = function (event) {
      if (self.ws !== ws) return;
      self.ws = null;
      clearInterval(self.heartbeatTimer);
      if (self.stopped) return;
      if (event.code === P.CLOSE.SESSION_ENDED) {
        self.stopped = true;
        if (self.options.onSessionEnded) self.options.onSessionEnded();
        return;
      }
      self.scheduleRetry();
    };
    ws.onerror = function () { /* onclose follows and decides */ };
  };

  ChatSocket.prototype.scheduleRetry = function () {
    var self = this;
    if (this.stopped) return;
    this.attempt += 1;
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, this.attempt - 1));
    var delay = Math.round(base * (0.75 + Math.random() * 0.5));
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(function () { self.connect(); }, delay);
    this.setState('reconnecting', { attempt: this.attempt, retryAt: Date.now() + delay });
    // After a few failures ask the API whether the session is still valid: the WebSocket API
    // cannot see the 401 a refused upgrade answers.
    if (this.attempt === 3 && this.options.checkSession) this.options.checkSession();
  };

  ChatSocket.prototype.reconnectNow = function () {
    if (this.stopped || (this.ws && this.ws.readyState <= 1)) return;
    this.connect();
  };

  ChatSocket.prototype.beat = function () {
    var ws = this.ws;
    if (!ws || ws.readyState !== 1) return;
    var now = Date.now();
    if (now - this.lastHeard > SILENCE_MS) {
      // Half-open link (laptop slept, NAT dropped it): close and start over.
      this.ws = null;
      ws.onclose = null;
      try { ws.close(); } catch (e) { /* ignore */ }
      clearInterval(this.heartbeatTimer);
      this.scheduleRetry();
      return;
    }
    if (now - this.lastBeat >= HEARTBEAT_MS) {
      this.lastBeat = now;
      this.sendRaw({ cmd: CMD.HEARTBEAT });
    }
  };

  ChatSocket.prototype.handle = function (frame) {
    var cmd = frame.cmd;
    if (cmd === CMD.HEARTBEAT) return;           // heartbeat answer
    if (cmd === CMD.ACK) {                       // acknowledgement of a message we sent
      this.dropFromOutbox(frame.cid);
      if (this.options.onAck) this.options.onAck(frame);
      return;
    }
    if (cmd === CMD.REFUSED) {                   // a refused frame
      // throttled, or not stored in time (database unavailable): the same cid is sent again
      var again = P.isRetryable(frame.reason);
      if (frame.cid && !again) this.dropFromOutbox(frame.cid);
      if (frame.cid && again) this.retryLater();
      if (!frame.cid && again && this.resyncing) this.syncLater();
      if (this.options.onRefused) this.options.onRefused(frame);
      return;
    }
    if (P.isChat(cmd) && typeof frame.id === 'number' && frame.id > this.since) {
      this.since = frame.id;
    }
    if (cmd === CMD.SYNC_END && typeof frame.upto === 'number') {
      if (frame.upto > this.since) this.since = frame.upto;
      if (frame.more) this.sendRaw({ cmd: CMD.SYNC, since: this.since });
      else this.resyncing = false;
    }
    if (cmd === CMD.RESYNC && typeof frame.since === 'number') {
      // The server's link to the other servers had a gap: messages above `since` may have
      // been missed even though later ones arrived. Sync from there (repeats are dropped by id).
      if (frame.since < this.since) this.since = frame.since;
      this.resyncing = true;
      this.sendRaw({ cmd: CMD.SYNC, since: this.since });
      return;
    }
    if (this.options.onFrame) this.options.onFrame(frame);
  };

  ChatSocket.prototype.retryLater = function () {
    var self = this;
    clearTimeout(this.throttleTimer);
    this.throttleTimer = setTimeout(function () { self.flushOutbox(); }, 1500);
  };

  ChatSocket.prototype.syncLater = function () {
    var self = this;
    clearTimeout(this.syncTimer);
    this.syncTimer = setTimeout(function () { self.sendRaw({ cmd: CMD.SYNC, since: self.since }); }, 1500);
  };

  ChatSocket.prototype.sendRaw = function (obj) {
    var ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(obj));
      return true;
    } catch (e) {
      return false;
    }
  };

  ChatSocket.prototype.isOnline = function () {
    return !!(this.ws && this.ws.readyState === 1);
  };

  /** Queue a chat message (it must carry `cid`) and send it now if the link is up. */
  ChatSocket.prototype.sendMessage = function (frame) {
    this.outbox.push(frame);
    return this.sendRaw(frame);
  };

  ChatSocket.prototype.flushOutbox = function () {
    var frames = this.outbox.frames();
    for (var i = 0; i < frames.length; i++) {
      if (!this.sendRaw(frames[i])) return;
    }
  };

  ChatSocket.prototype.dropFromOutbox = function (cid) {
    this.outbox.drop(cid);
  };

  ChatSocket.prototype.pending = function () {
    return this.outbox.frames();
  };

  // localStorage may be disabled (some private modes throw on mere access).
  function localStorageOrNull() {
    try { return window.localStorage; } catch (e) { return null; }
  }

  window.IM = window.IM || {};
  window.IM.ChatSocket = ChatSocket;
})();
