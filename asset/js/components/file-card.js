/* imchat web client: a file message's card — the file's type icon, name and size, a link that
 * downloads it under its name, and a preview: pictures inline (the server's thumbnail) and
 * PDFs in a frame on request. The file's URL has been checked (this server's /resource/). */
(function () {
  'use strict';

  // A file's type icon: its label and colour, by extension (the type the server gave it is
  // the fallback); only a hint for the eye, nothing is decided by it.
  var FAMILIES = [
    [/^pdf$/, 'PDF', 'pdf'], [/^(docx?|odt|rtf)$/, 'DOC', 'doc'], [/^(xlsx?|ods|csv)$/, 'XLS', 'xls'],
    [/^(pptx?|odp|key)$/, 'PPT', 'ppt'], [/^(zip|rar|7z|gz|tgz|tar|bz2|xz)$/, 'ZIP', 'zip'],
    [/^(png|jpe?g|gif|webp|bmp|heic|svg|tiff?)$/, 'IMG', 'img'], [/^(mp3|wav|ogg|m4a|flac|aac|opus)$/, 'AUD', 'aud'],
    [/^(mp4|mov|mkv|webm|avi)$/, 'VID', 'vid'], [/^(txt|md|log|json|xml|html?|js|py|java|c|cpp|go)$/, 'TXT', 'txt']
  ];

  function typeIcon(name, mime) {
    var extension = (/\.([A-Za-z0-9]{1,8})$/.exec(name || '') || [])[1];
    extension = (extension || '').toLowerCase();
    for (var i = 0; i < FAMILIES.length; i++) {
      if (FAMILIES[i][0].test(extension)) return { label: FAMILIES[i][1], family: FAMILIES[i][2] };
    }
    if (mime === 'application/pdf') return { label: 'PDF', family: 'pdf' };
    return { label: extension ? extension.slice(0, 4).toUpperCase() : 'FILE', family: 'other' };
  }

  IM.components = IM.components || {};
  IM.components.FileCard = {
    render: IM.templates['file-card'],
    mixins: [IM.ui.i18nMixin],
    inject: ['chat'],
    props: { src: { type: String, required: true }, name: { type: String, default: '' },
      size: { type: Number, default: 0 }, mime: { type: String, default: '' }, thumb: { type: String, default: '' } },
    data: function () { return { previewing: false }; },
    computed: {
      icon: function () { return typeIcon(this.name, this.mime); },
      shownName: function () { return this.name || this.t('file'); },
      href: function () { return this.src + '?name=' + encodeURIComponent(this.shownName); },
      isPdf: function () { return this.icon.family === 'pdf' || this.mime === 'application/pdf'; },
      previewUrl: function () { return this.src + '?preview=1&name=' + encodeURIComponent(this.shownName); }
    },
    methods: { formatBytes: IM.util.formatBytes }
  };
  IM.fileTypeIcon = typeIcon;
})();
