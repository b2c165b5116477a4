/* imchat web client: start-up — one Vue app (runtime-only build: the templates were compiled
 * into asset/build/templates.js when the assets were built) with every component registered
 * under the name its parent's template uses, mounted on #app. */
(function () {
  'use strict';

  var parts = IM.components;
  var app = Vue.createApp(parts.Root);
  IM.ui.install(app);
  app.component('login-page', parts.LoginPage);
  app.component('register-page', parts.RegisterPage);
  app.component('chat-app', parts.ChatApp);
  app.component('chat-sidebar', parts.Sidebar);
  app.component('message-pane', parts.MessagePane);
  app.component('message-search', parts.MessageSearch);
  app.component('chat-composer', parts.Composer);
  app.component('member-drawer', parts.MemberDrawer);
  app.component('chat-dialogs', parts.Dialogs);
  app.component('group-dialogs', parts.GroupDialogs);
  app.component('profile-dialog', parts.Profile);
  app.component('voice-button', parts.VoiceButton);
  app.component('file-card', parts.FileCard);
  app.component('account-forms', parts.AccountForms);
  app.component('people-dialog', parts.People);
  app.component('peer-menu', parts.PeerMenu);
  app.component('admin-console', parts.AdminConsole);
  app.component('admin-users', parts.AdminUsers);
  app.component('admin-groups', parts.AdminGroups);
  app.component('admin-audit', parts.AdminAudit);
  app.mount('#app');
})();
