/* imchat web client: the menu of a one-to-one conversation's header — remove the friend, block
 * or unblock them. Both ask once more before they act (the second click confirms). */
(function () {
  'use strict';

  IM.components = IM.components || {};
  IM.components.PeerMenu = {
    render: IM.templates['peer-menu'],
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    props: { peer: { type: Number, required: true } },
    data: function () { return { open: false, confirming: '', busy: false }; },
    computed: {
      isFriend: function () { return this.chat.store.isFriend(this.peer); },
      isBlocked: function () { return this.chat.people.isBlocked(this.peer); }
    },
    watch: { peer: function () { this.open = false; this.confirming = ''; } },
    methods: {
      toggle: function () { this.open = !this.open; this.confirming = ''; },

      run: function (what) {
        var self = this;
        if (what !== 'unblock' && this.confirming !== what) { this.confirming = what; return; }
        var people = this.chat.people;
        var action = { remove: people.removeFriend, block: people.block, unblock: people.unblock }[what];
        this.busy = true;
        action(this.peer).then(function () {
          var name = { name: self.chat.view.userName(self.peer) };
          IM.ui.toast(what === 'remove' ? self.t('friendRemoved', name) : what === 'block' ? self.t('userBlocked', name)
            : self.t('userUnblocked', name), 'success');
          self.open = false;
        }, function (error) { IM.ui.toast(error.message, 'error'); })
          .then(function () { self.busy = false; self.confirming = ''; });
      }
    }
  };
})();
