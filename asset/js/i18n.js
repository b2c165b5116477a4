/* imchat web client: the two languages (zh-CN, English), chosen from the browser's language
 * or the user's last choice, switchable at any time. Owns every word the page shows. */
(function () {
  'use strict';

  var MESSAGES = {
    en: {
      tagline: 'Team chat on your own network',
      heroTitle: 'Chat with your team, on a server you own.',
      heroPrivate: 'Private by design. ',
      heroPrivateText: 'Messages and pictures stay on your own network; nothing is sent to the cloud.',
      heroLive: 'Instant and dependable. ',
      heroLiveText: 'Messages arrive at once, survive a lost connection and are never delivered twice.',
      heroGroups: 'Friends and groups. ',
      heroGroupsText: 'One-to-one and group chats with emoji, stickers, pictures and read receipts.',
      language: 'Language',
      login: 'Log in',
      loggingIn: 'Logging in…',
      register: 'Create account',
      registering: 'Creating account…',
      mobile: 'Mobile number',
      mobilePlaceholder: 'e.g. 13800000001',
      password: 'Password',
      passwordHint: 'At least 6 characters',
      nickname: 'Display name',
      nicknamePlaceholder: 'How others see you',
      sex: 'Gender',
      sexM: 'Male',
      sexW: 'Female',
      sexU: 'Rather not say',
      avatar: 'Avatar',
      uploadAvatar: 'Upload a picture',
      chooseAvatar: 'or pick one',
      noAccount: 'No account yet?',
      haveAccount: 'Already have an account?',
      signUpLink: 'Sign up',
      signInLink: 'Log in',
      chats: 'Chats',
      contacts: 'Contacts',
      friends: 'Friends',
      groups: 'Groups',
      search: 'Search',
      searchMessagesFor: 'Search messages for “{q}”',
      searchMessagesPlaceholder: 'Search messages',
      searchInChat: 'Search in this chat',
      searchIn: 'In {name}',
      searchEverywhere: 'Search all chats',
      searchAllChats: 'All chats',
      searchNoResults: 'No messages found.',
      searchNothingYet: 'Nothing found in the newest messages yet.',
      searchMore: 'More results',
      searching: 'Searching…',
      jumpToLatest: 'Jump to the latest messages',
      noChats: 'No conversations yet. Add a friend or join a group to start chatting.',
      noFriends: 'No friends yet.',
      noGroups: 'No groups yet.',
      addFriend: 'Add friend',
      addFriendHint: "Enter your friend's mobile number",
      createGroup: 'Create group',
      groupName: 'Group name',
      groupMemo: 'Description (optional)',
      groupIcon: 'Group icon (optional)',
      joinGroup: 'Join group',
      joinGroupHint: "Enter the group's name",
      add: 'Add',
      create: 'Create',
      join: 'Join',
      cancel: 'Cancel',
      close: 'Close',
      send: 'Send',
      back: 'Back',
      profile: 'Profile',
      logout: 'Log out',
      members: 'Members',
      memberCount: '{n} members',
      online: 'Online',
      offline: 'Offline',
      typing: '{name} is typing…',
      messagePlaceholder: 'Write a message…',
      pressEnter: 'Enter to send, Shift+Enter for a new line',
      emoji: 'Emoji',
      stickers: 'Stickers',
      picture: 'Picture',
      sendPicture: 'Send picture',
      uploading: 'Uploading…',
      loadOlder: 'Loading earlier messages…',
      noOlder: 'This is the beginning of the conversation',
      read: 'Read',
      unread: 'Unread',
      readBy: '{n} read',
      allRead: 'All read',
      sending: 'Sending…',
      queued: 'Waiting for connection',
      failed: 'Not sent',
      retry: 'Retry',
      connecting: 'Connecting…',
      reconnecting: 'Connection lost. Reconnecting…',
      reconnectIn: 'Connection lost. Reconnecting in {s}s…',
      reconnectNow: 'Reconnect now',
      notifications: 'Notifications',
      enableNotifications: 'Enable desktop notifications',
      notificationsOn: 'Notifications are on',
      notificationsBlocked: 'Notifications are blocked in this browser',
      newMessage: 'New message',
      picturePreview: '[Picture]',
      stickerPreview: '[Sticker]',
      voicePreview: '[Voice]',
      unsupported: '[Unsupported message]',
      today: 'Today',
      yesterday: 'Yesterday',
      friendAdded: '{name} is now your friend',
      groupCreated: 'Group "{name}" created',
      groupJoined: 'You joined "{name}"',
      changeAvatar: 'Change avatar',
      avatarSaved: 'Avatar updated',
      avatarNotSaved: 'The server cannot change avatars yet',
      selectChat: 'Select a conversation',
      selectChatHint: 'Pick a friend or a group on the left, or add someone new.',
      you: 'You',
      sessionEnded: 'Your session ended. Please log in again.',
      networkError: 'Cannot reach the server',
      required: 'Please fill in {field}',
      startChat: 'Send message',
      fileTooBig: 'The file is too large',
      onlyPictures: 'Please choose a picture (PNG, JPEG, GIF or WebP)'
    },
    'zh-CN': {
      tagline: '部署在自己网络里的团队聊天',
      heroTitle: '团队沟通，运行在你自己的服务器上。',
      heroPrivate: '数据私有。',
      heroPrivateText: '消息和图片只保存在你的内网，不经过任何云服务。',
      heroLive: '实时可靠。',
      heroLiveText: '消息即时送达，断线重连后自动补齐，绝不重复。',
      heroGroups: '好友与群聊。',
      heroGroupsText: '单聊、群聊，支持表情、表情包、图片和已读回执。',
      language: '语言',
      login: '登录',
      loggingIn: '正在登录…',
      register: '注册账号',
      registering: '正在注册…',
      mobile: '手机号',
      mobilePlaceholder: '例如 13800000001',
      password: '密码',
      passwordHint: '至少 6 个字符',
      nickname: '昵称',
      nicknamePlaceholder: '别人看到的名字',
      sex: '性别',
      sexM: '男',
      sexW: '女',
      sexU: '保密',
      avatar: '头像',
      uploadAvatar: '上传图片',
      chooseAvatar: '或选择一个',
      noAccount: '还没有账号？',
      haveAccount: '已有账号？',
      signUpLink: '立即注册',
      signInLink: '去登录',
      chats: '消息',
      contacts: '通讯录',
      friends: '好友',
      groups: '群聊',
      search: '搜索',
      searchMessagesFor: '搜索聊天记录“{q}”',
      searchMessagesPlaceholder: '搜索聊天记录',
      searchInChat: '在此会话中搜索',
      searchIn: '在“{name}”中',
      searchEverywhere: '搜索全部会话',
      searchAllChats: '全部会话',
      searchNoResults: '没有找到相关消息。',
      searchNothingYet: '最近的消息中暂未找到。',
      searchMore: '更多结果',
      searching: '正在搜索…',
      jumpToLatest: '回到最新消息',
      noChats: '还没有会话。添加好友或加入群聊，开始聊天吧。',
      noFriends: '还没有好友。',
      noGroups: '还没有加入群聊。',
      addFriend: '添加好友',
      addFriendHint: '输入好友的手机号',
      createGroup: '创建群聊',
      groupName: '群名称',
      groupMemo: '群介绍（可选）',
      groupIcon: '群头像（可选）',
      joinGroup: '加入群聊',
      joinGroupHint: '输入群名称',
      add: '添加',
      create: '创建',
      join: '加入',
      cancel: '取消',
      close: '关闭',
      send: '发送',
      back: '返回',
      profile: '个人资料',
      logout: '退出登录',
      members: '群成员',
      memberCount: '{n} 位成员',
      online: '在线',
      offline: '离线',
      typing: '{name} 正在输入…',
      messagePlaceholder: '输入消息…',
      pressEnter: 'Enter 发送，Shift+Enter 换行',
      emoji: '表情',
      stickers: '表情包',
      picture: '图片',
      sendPicture: '发送图片',
      uploading: '正在上传…',
      loadOlder: '正在加载更早的消息…',
      noOlder: '已经是最早的消息了',
      read: '已读',
      unread: '未读',
      readBy: '{n} 人已读',
      allRead: '全部已读',
      sending: '发送中…',
      queued: '等待连接',
      failed: '发送失败',
      retry: '重发',
      connecting: '正在连接…',
      reconnecting: '连接已断开，正在重新连接…',
      reconnectIn: '连接已断开，{s} 秒后重新连接…',
      reconnectNow: '立即重连',
      notifications: '通知',
      enableNotifications: '开启桌面通知',
      notificationsOn: '桌面通知已开启',
      notificationsBlocked: '浏览器已禁止通知',
      newMessage: '新消息',
      picturePreview: '[图片]',
      stickerPreview: '[表情]',
      voicePreview: '[语音]',
      unsupported: '[暂不支持的消息]',
      today: '今天',
      yesterday: '昨天',
      friendAdded: '已添加 {name} 为好友',
      groupCreated: '群聊“{name}”已创建',
      groupJoined: '已加入群聊“{name}”',
      changeAvatar: '更换头像',
      avatarSaved: '头像已更新',
      avatarNotSaved: '服务器暂不支持修改头像',
      selectChat: '选择一个会话',
      selectChatHint: '在左侧选择好友或群聊，或者添加新的好友。',
      you: '我',
      sessionEnded: '登录已失效，请重新登录。',
      networkError: '无法连接服务器',
      required: '请填写{field}',
      startChat: '发消息',
      fileTooBig: '文件太大',
      onlyPictures: '请选择图片（PNG、JPEG、GIF 或 WebP）'
    }
  };

  var LANGS = [{ code: 'zh-CN', label: '简体中文' }, { code: 'en', label: 'English' }];
  var STORAGE_KEY = 'imchat.lang';

  function detect() {
    try {
      var saved = localStorage.getItem(STORAGE_KEY);
      if (saved && MESSAGES[saved]) return saved;
    } catch (e) { /* storage may be disabled */ }
    var wanted = navigator.languages && navigator.languages.length
      ? navigator.languages : [navigator.language || 'en'];
    for (var i = 0; i < wanted.length; i++) {
      var lang = String(wanted[i]).toLowerCase();
      if (lang.indexOf('zh') === 0) return 'zh-CN';
      if (lang.indexOf('en') === 0) return 'en';
    }
    return 'en';
  }

  var state = Vue.reactive({ lang: detect() });

  function t(key, params) {
    var table = MESSAGES[state.lang] || MESSAGES.en;
    var text = table[key] !== undefined ? table[key] : (MESSAGES.en[key] !== undefined ? MESSAGES.en[key] : key);
    if (params) {
      text = text.replace(/\{(\w+)\}/g, function (whole, name) {
        return params[name] !== undefined ? String(params[name]) : whole;
      });
    }
    return text;
  }

  function setLang(lang) {
    if (!MESSAGES[lang]) return;
    state.lang = lang;
    try { localStorage.setItem(STORAGE_KEY, lang); } catch (e) { /* ignore */ }
    document.documentElement.lang = lang;
  }

  document.documentElement.lang = state.lang;

  /** Add the words of a part of the client loaded separately (i18n-admin.js), per language. */
  function add(tables) {
    Object.keys(tables).forEach(function (lang) { Object.assign(MESSAGES[lang], tables[lang]); });
  }

  window.IM = window.IM || {};
  window.IM.i18n = { state: state, t: t, setLang: setLang, langs: LANGS, add: add };
})();
