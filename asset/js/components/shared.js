/* imchat web client: the small shared Vue components — avatar, text with safe links, modal
 * dialog, language switch — and the toast messages. Their templates are the .html files of the
 * same names beside this one, compiled at build time (scripts/compile_templates.js). */
(function () {
  'use strict';

  var util = IM.util;
  var i18n = IM.i18n;

  var toasts = Vue.reactive([]);
  var toastId = 0;

  /** Show a short message at the bottom of the screen; kind: info, error, success. */
  function toast(text, kind) {
    toastId += 1;
    var entry = { id: toastId, text: String(text), kind: kind || 'info' };
    toasts.push(entry);
    setTimeout(function () {
      var index = toasts.indexOf(entry);
      if (index !== -1) toasts.splice(index, 1);
    }, kind === 'error' ? 5000 : 3000);
  }

  /** Mixin giving every component `t()` and the language state. */
  var i18nMixin = {
    computed: { i18n: function () { return i18n.state; } },
    methods: { t: function (key, params) { void i18n.state.lang; return i18n.t(key, params); } }
  };

  var Avatar = {
    render: IM.templates.avatar,
    props: {
      src: { type: String, default: '' },
      name: { type: String, default: '' },
      seed: { type: [String, Number], default: '' },
      size: { type: String, default: 'md' },
      group: { type: Boolean, default: false },
      presence: { type: Boolean, default: null }
    },
    data: function () { return { broken: false }; },
    watch: { src: function () { this.broken = false; } },
    computed: {
      // Only this server's own pictures; a foreign URL falls back to initials.
      picture: function () { return this.broken ? '' : util.safeMediaUrl(this.src); },
      color: function () { return util.colorFor(this.seed || this.name); },
      letters: function () { return util.initials(this.name); }
    }
  };

  var RichText = {
    render: IM.templates['rich-text'],
    props: { text: { type: String, default: '' } },
    computed: { pieces: function () { return util.linkify(this.text); } }
  };

  var Modal = {
    render: IM.templates.modal,
    mixins: [i18nMixin],
    props: { title: { type: String, default: '' }, wide: { type: Boolean, default: false } },
    emits: ['close'],
    mounted: function () {
      var self = this;
      this.onKey = function (event) { if (event.key === 'Escape') self.$emit('close'); };
      document.addEventListener('keydown', this.onKey);
    },
    unmounted: function () { document.removeEventListener('keydown', this.onKey); }
  };

  var LangSwitch = {
    render: IM.templates['lang-switch'],
    mixins: [i18nMixin],
    computed: { langs: function () { return i18n.langs; } },
    methods: { setLang: function (lang) { i18n.setLang(lang); } }
  };

  // Focus a dialog's first field once it is shown (after its opening transition), unless the
  // user has already moved to another field of the same form: typing there must stay there.
  var focusDirective = {
    mounted: function (el) {
      setTimeout(function () {
        var scope = el.closest('form') || el.parentNode;
        var active = document.activeElement;
        if (active && active !== el && active !== document.body && scope && scope.contains(active)) return;
        el.focus();
      }, 30);
    }
  };

  // The phone layout (one pane at a time) below this width; app.css uses the same breakpoint.
  var PHONE_WIDTH = 760;

  function isPhone() { return window.innerWidth <= PHONE_WIDTH; }

  function install(app) {
    app.component('im-avatar', Avatar);
    app.component('im-rich-text', RichText);
    app.component('im-modal', Modal);
    app.component('lang-switch', LangSwitch);
    app.directive('focus', focusDirective);
  }

  window.IM = window.IM || {};
  window.IM.ui = { toasts: toasts, toast: toast, i18nMixin: i18nMixin, isPhone: isPhone, install: install };
})();
