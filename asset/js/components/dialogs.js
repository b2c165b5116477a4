/* imchat web client: the chat's dialogs — add a friend, create a group (with an optional
 * icon), join a group, the preview before a picture is sent, and the full-size picture view.
 * Which dialog is open is the chat's (`chat.dialog`); each form's fields are kept here. */
(function () {
  'use strict';

  var api = IM.util.api;
  var CMD = IM.protocol.CMD;
  var MEDIA = IM.protocol.MEDIA;

  function emptyForm() { return { mobile: '', name: '', memo: '', icon: '', private: false, busy: false, error: '' }; }

  IM.components = IM.components || {};
  IM.components.Dialogs = {
    render: IM.templates.dialogs,
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    data: function () { return { form: emptyForm(), accept: IM.upload.ACCEPT }; },
    computed: {
      draft: function () { return this.chat.pictureDraft; }
    },
    watch: {
      'chat.dialog': function () { this.form = emptyForm(); }
    },
    methods: {
      formatBytes: IM.util.formatBytes,

      close: function () { this.chat.dialog = null; },

      /** Run a form's request: busy while it runs, its error shown in the form. */
      submit: function (request) {
        var self = this;
        this.form.busy = true;
        this.form.error = '';
        return request().then(null, function (error) { self.form.error = error.message; })
          .then(function () { self.form.busy = false; });
      },

      addFriend: function () {
        var self = this;
        var chat = this.chat;
        this.submit(function () {
          return api('/contact/addfriend', { dstname: self.form.mobile }).then(function (answer) {
            var friend = answer.data;
            self.close();
            IM.ui.toast(self.t('friendAdded', { name: friend.nickname || friend.mobile }), 'success');
            chat.store.rememberUser(friend);
            if (friend.online) chat.state.online[friend.id] = true;
            return chat.loaders.friends().then(function () { chat.openConversation(CMD.SINGLE, friend.id); });
          });
        });
      },

      pickGroupIcon: function (event) {
        var self = this;
        var file = IM.upload.pickedFile(event);
        if (!file) return;
        IM.upload.uploadPicture(file).then(function (picture) {
          self.form.icon = picture.thumb || picture.url;
        }, function (error) { self.form.error = error.message; });
      },

      createGroup: function () {
        var self = this;
        this.submit(function () {
          return api('/contact/createcommunity', { name: self.form.name, memo: self.form.memo, icon: self.form.icon || '', private: self.form.private ? 1 : 0 })
            .then(function (answer) { return self.groupReady(answer.data, 'groupCreated'); });
        });
      },

      joinGroup: function () {
        var self = this;
        this.submit(function () {
          return api('/contact/joincommunity', { dstname: self.form.name })
            .then(function (answer) { return self.groupReady(answer.data, 'groupJoined'); });
        });
      },

      groupReady: function (group, said) {
        var chat = this.chat;
        this.close();
        IM.ui.toast(this.t(said, { name: group.name }), 'success');
        return chat.loaders.groups().then(function () { chat.openConversation(CMD.GROUP, group.id); });
      },

      cancelPicture: function () { this.chat.closePictureDialog(); },

      sendPicture: function () {
        var self = this;
        var chat = this.chat;
        var draft = this.draft;
        if (!draft) return;
        this.submit(function () {
          return IM.upload.uploadPicture(draft.file).then(function (picture) {
            if (chat.activeKey !== draft.conv) chat.activeKey = draft.conv;
            var memo = picture.width && picture.height ? picture.width + 'x' + picture.height : '';
            chat.send({ media: MEDIA.PICTURE, url: picture.url, pic: picture.thumb || '', memo: memo });
            self.cancelPicture();
          });
        });
      }
    }
  };
})();
