/* imchat web client: small helpers with no Vue in them — the HTTP API call, which picture URLs
 * may be shown, turning text into text-and-link pieces, times, and client message ids. Nothing
 * here touches the page when loaded, so the DOM-free store can use it outside a browser. */
(function () {
  'use strict';

  /** An API error carrying the server's envelope (`msg`, `reason`) and the HTTP status. */
  function ApiError(message, status, reason) {
    this.name = 'ApiError';
    this.message = message;
    this.status = status;
    this.reason = reason || '';
  }
  ApiError.prototype = Object.create(Error.prototype);

  /**
   * POST to the API with the session cookie. `body` is a plain object (sent as JSON) or a
   * FormData (sent as multipart). Resolves with the whole envelope when `code` is 0.
   */
  function api(path, body) {
    var init = { method: 'POST', credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body instanceof FormData) {
      init.body = body;
    } else {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body || {});
    }
    return send(path, init);
  }

  /** GET `path` with `params` as its query (empty values left out); the envelope as for api(). */
  function apiGet(path, params) {
    var init = { method: 'GET', credentials: 'same-origin', headers: { Accept: 'application/json' } };
    return send(withQuery(path, params), init);
  }

  function withQuery(path, params) {
    var parts = [];
    Object.keys(params || {}).forEach(function (name) {
      var value = params[name];
      if (value === '' || value === null || value === undefined) return;
      parts.push(encodeURIComponent(name) + '=' + encodeURIComponent(String(value)));
    });
    return parts.length ? path + '?' + parts.join('&') : path;
  }

  function send(path, init) {
    return fetch(path, init).then(function (response) {
      return response.text().then(function (text) {
        var envelope = null;
        try { envelope = JSON.parse(text); } catch (e) { envelope = null; }
        if (!envelope || typeof envelope !== 'object') {
          throw new ApiError(response.status === 413 ? IM.i18n.t('fileTooBig') : (response.statusText || 'HTTP ' + response.status), response.status);
        }
        if (envelope.code !== 0 || !response.ok) {
          throw new ApiError(envelope.msg || ('HTTP ' + response.status), response.status, envelope.reason);
        }
        return envelope;
      });
    }, function () {
      throw new ApiError(IM.i18n.t('networkError'), 0, 'network');
    });
  }

  // Pictures, stickers and voice come from this server only: uploads under /resource/, built-in
  // files under /asset/. Anything else (other hosts, javascript:, data:, ../) is never loaded.
  var LOCAL_MEDIA = /^\/(resource|asset)\/[A-Za-z0-9_\-./]+$/;

  function safeMediaUrl(url) {
    if (typeof url !== 'string' || url.length > 255) return '';
    if (!LOCAL_MEDIA.test(url) || url.indexOf('..') !== -1 || url.indexOf('//') !== -1) return '';
    return url;
  }

  function isStickerUrl(url) {
    return safeMediaUrl(url) !== '' && url.indexOf('/asset/') === 0;
  }

  // Links: http(s) URLs, or www. hosts. The result is a list of {text} and {text, href} pieces
  // that the template renders as text nodes and <a> elements (never as HTML).
  var LINK = /\b(?:https?:\/\/|www\.)[^\s<>"'`\u3000-\u303f\uff00-\uffef]+/gi;
  var TRAILING = /[.,;:!?)\]}'"]+$/;

  function safeHref(candidate) {
    var raw = /^www\./i.test(candidate) ? 'http://' + candidate : candidate;
    try {
      var parsed = new URL(raw);
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return '';
      return parsed.href;
    } catch (e) {
      return '';
    }
  }

  function linkify(text) {
    var pieces = [];
    if (typeof text !== 'string' || !text) return pieces;
    var last = 0;
    var match;
    LINK.lastIndex = 0;
    while ((match = LINK.exec(text)) !== null) {
      var found = match[0];
      var trailing = found.match(TRAILING);
      if (trailing) found = found.slice(0, found.length - trailing[0].length);
      var href = safeHref(found);
      if (!href) continue;
      if (match.index > last) pieces.push({ text: text.slice(last, match.index) });
      pieces.push({ text: found, href: href });
      last = match.index + found.length;
      LINK.lastIndex = last;
    }
    if (last < text.length) pieces.push({ text: text.slice(last) });
    return pieces;
  }

  function pad(n) { return n < 10 ? '0' + n : String(n); }

  function clock(date) { return pad(date.getHours()) + ':' + pad(date.getMinutes()); }

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }

  /** Short time for lists: 14:05, Yesterday, 03-18, 2023-03-18. */
  function shortTime(ms) {
    if (!ms) return '';
    var date = new Date(ms);
    var now = new Date();
    if (sameDay(date, now)) return clock(date);
    var yesterday = new Date(now.getTime() - 86400000);
    if (sameDay(date, yesterday)) return IM.i18n.t('yesterday');
    if (date.getFullYear() === now.getFullYear()) return pad(date.getMonth() + 1) + '-' + pad(date.getDate());
    return date.getFullYear() + '-' + pad(date.getMonth() + 1) + '-' + pad(date.getDate());
  }

  /** Time for a separator in a conversation: "Today 14:05", "03-18 09:30". */
  function dayTime(ms) {
    if (!ms) return '';
    var date = new Date(ms);
    var now = new Date();
    if (sameDay(date, now)) return IM.i18n.t('today') + ' ' + clock(date);
    var yesterday = new Date(now.getTime() - 86400000);
    if (sameDay(date, yesterday)) return IM.i18n.t('yesterday') + ' ' + clock(date);
    return shortTime(ms) + ' ' + clock(date);
  }

  var cidCounter = 0;

  /** A client message id, unique per device: the server stores a resend with it only once. */
  function newCid(userId) {
    cidCounter += 1;
    var random = '';
    if (globalThis.crypto && globalThis.crypto.getRandomValues) {
      var bytes = new Uint8Array(6);
      globalThis.crypto.getRandomValues(bytes);
      for (var i = 0; i < bytes.length; i++) random += pad(bytes[i].toString(36)).slice(-2);
    } else {
      random = Math.random().toString(36).slice(2, 10);
    }
    return 'w' + userId + '-' + Date.now().toString(36) + '-' + cidCounter.toString(36) + '-' + random;
  }

  var PALETTE = ['#5b7cfa', '#f0795b', '#2fb39a', '#f3a73b', '#a06cf0', '#3aa7e8', '#6cbf57', '#e8608f'];

  function colorFor(key) {
    var text = String(key || '');
    var hash = 0;
    for (var i = 0; i < text.length; i++) hash = (hash * 31 + text.charCodeAt(i)) | 0;
    return PALETTE[Math.abs(hash) % PALETTE.length];
  }

  function initials(name) {
    var text = String(name || '').trim();
    if (!text) return '?';
    var chars = Array.from(text);
    if (/^[\u4e00-\u9fff]/.test(chars[0])) return chars.slice(-2).join('');
    var words = text.split(/\s+/).filter(Boolean);
    if (words.length > 1) return (Array.from(words[0])[0] + Array.from(words[1])[0]).toUpperCase();
    return chars.slice(0, 2).join('').toUpperCase();
  }

  function formatBytes(size) {
    if (size < 1024) return size + ' B';
    if (size < 1024 * 1024) return (size / 1024).toFixed(0) + ' KB';
    return (size / 1024 / 1024).toFixed(1) + ' MB';
  }

  var IM = globalThis.IM = globalThis.IM || {};
  IM.util = {
    ApiError: ApiError,
    api: api,
    apiGet: apiGet,
    withQuery: withQuery,
    safeMediaUrl: safeMediaUrl,
    isStickerUrl: isStickerUrl,
    linkify: linkify,
    safeHref: safeHref,
    shortTime: shortTime,
    dayTime: dayTime,
    newCid: newCid,
    colorFor: colorFor,
    initials: initials,
    formatBytes: formatBytes
  };
})();
