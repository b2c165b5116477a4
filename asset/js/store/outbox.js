/* imchat web client: the outbox — chat frames sent but not yet acknowledged, in sending order,
 * kept in a Storage (localStorage in the page) so they survive a reload. Plain JavaScript with
 * no DOM: the storage is handed in, and a storage that is missing, full or disabled leaves the
 * in-memory outbox working. */
(function (IM) {
  'use strict';

  /** storage: an object with getItem/setItem/removeItem, or null. */
  function Outbox(storage, key) {
    this.storage = storage;
    this.key = key;
    this.entries = this.load();   // [{cid, frame}]
  }

  Outbox.prototype.load = function () {
    try {
      var saved = JSON.parse((this.storage && this.storage.getItem(this.key)) || '[]');
      return Array.isArray(saved) ? saved.filter(function (e) { return e && e.cid && e.frame; }) : [];
    } catch (e) {
      return [];
    }
  };

  Outbox.prototype.save = function () {
    if (!this.storage) return;
    try {
      if (this.entries.length) this.storage.setItem(this.key, JSON.stringify(this.entries));
      else this.storage.removeItem(this.key);
    } catch (e) { /* storage full or disabled: the in-memory outbox still works */ }
  };

  /** Keep a frame (it must carry `cid`) until its acknowledgement. */
  Outbox.prototype.push = function (frame) {
    this.entries.push({ cid: frame.cid, frame: frame });
    this.save();
  };

  Outbox.prototype.drop = function (cid) {
    if (!cid) return;
    var before = this.entries.length;
    this.entries = this.entries.filter(function (entry) { return entry.cid !== cid; });
    if (this.entries.length !== before) this.save();
  };

  Outbox.prototype.frames = function () {
    return this.entries.map(function (entry) { return entry.frame; });
  };

  IM.Outbox = Outbox;
})(globalThis.IM = globalThis.IM || {});
