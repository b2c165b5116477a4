/* imchat web client: the root — which page the path names (/, /register, /app, /admin), whether the
 * session cookie is still good, moving between pages without reloading, and the toasts.
 *
 * The session probe (POST /user/me) runs only when the page says the browser holds a session
 * cookie (`data-session` on <body>, set by the server from the cookie's presence: the cookie
 * itself is HttpOnly). A fresh visitor so never sees a failed request in the console. */
(function () {
  'use strict';

  var PATHS = { login: '/', register: '/register', app: '/app', admin: '/admin' };

  function pageOfPath(path) {
    if (path === '/register') return 'register';
    if (path === '/app') return 'app';
    if (path === '/admin') return 'admin';
    return 'login';
  }

  function mayHaveSession() {
    return document.body.getAttribute('data-session') === '1';
  }

  IM.components = IM.components || {};
  IM.components.Root = {
    render: IM.templates.root,
    mixins: [IM.ui.i18nMixin],
    data: function () {
      return { page: pageOfPath(location.pathname), me: null, ready: false, toasts: IM.ui.toasts };
    },
    created: function () {
      var self = this;
      window.addEventListener('popstate', function () { self.show(pageOfPath(location.pathname), false); });
      var probe = mayHaveSession() ? IM.util.api('/user/me', {}) : Promise.reject(new Error('no session cookie'));
      probe.then(function (answer) {
        self.me = answer.data;
      }, function () {
        self.me = null;
      }).then(function () {
        self.ready = true;
        self.show(self.page, false);
      });
    },
    methods: {
      /** Show a page; logged-in users go to the app, others to the login page. */
      show: function (page, push) {
        // The admin console is for administrators (`admin` from /user/me); others go on to
        // the chat, or to the login page without a session.
        if ((page === 'app' || page === 'admin') && !this.me) page = 'login';
        if (page === 'admin' && !this.me.admin) page = 'app';
        if (page !== 'app' && page !== 'admin' && this.me) page = 'app';
        this.page = page;
        var path = PATHS[page];
        if (location.pathname !== path) {
          if (push) history.pushState({}, '', path);
          else history.replaceState({}, '', path);
        }
      },
      go: function (page) { this.show(page, true); },
      onLoggedIn: function (user) {
        var self = this;
        self.me = user;
        self.show('app', true);
        // The login answer does not say whether this is an administrator; /user/me does.
        IM.util.api('/user/me', {}).then(function (answer) {
          if (self.me && self.me.id === answer.data.id) self.me = Object.assign({}, self.me, { admin: answer.data.admin });
        }, function () { /* the chat shows its own errors */ });
      },
      onLoggedOut: function () {
        this.me = null;
        this.show('login', true);
      }
    }
  };
})();
