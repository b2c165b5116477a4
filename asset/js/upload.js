/* imchat web client: the one way a file goes to the server — the list of picture types the
 * client offers and accepts (the server's own list is the last word), and the upload to
 * /attach/upload: a picture (its URL, a preview URL and its size), a voice clip, or any file
 * (its URL, safe name, size, type and kind as the server judged it by content). */
(function () {
  'use strict';

  var TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
  var ACCEPT = TYPES.join(',');   // for <input type=file accept=...>

  function accepts(file) { return !!file && TYPES.indexOf(file.type) !== -1; }

  /** Upload a file; `kind` 'picture' or 'voice' refuses other content, '' takes any file.
   * Resolves with {url, thumb, width, height, kind, name, size, mime} (URLs already checked). */
  function uploadAs(file, kind, name) {
    var form = new FormData();
    form.append('file', file, name || file.name || 'file');
    if (kind) form.append('kind', kind);
    return IM.util.api('/attach/upload', form).then(function (answer) {
      var url = IM.util.safeMediaUrl(answer.data);
      if (!url) throw new IM.util.ApiError(IM.i18n.t('unsupported'), 200);
      return {
        url: url, thumb: IM.util.safeMediaUrl(answer.thumb), width: answer.width || 0, height: answer.height || 0,
        kind: answer.kind || '', name: answer.name || file.name || '', size: answer.size || file.size || 0,
        mime: answer.mime || ''
      };
    });
  }

  function uploadPicture(file) { return uploadAs(file, 'picture'); }

  /** Any file, sent as it is (a picture among them is re-encoded and previewed). */
  function uploadFile(file) { return uploadAs(file, ''); }

  /** A recorded voice clip (a Blob from MediaRecorder). */
  function uploadVoice(blob, name) { return uploadAs(blob, 'voice', name); }

  /** Upload a picture and make it the logged-in user's avatar; resolves with its URL. */
  function uploadAvatar(file) {
    return uploadPicture(file).then(function (picture) {
      var url = picture.thumb || picture.url;
      return IM.util.api('/user/update', { avatar: url }).then(function (saved) {
        return (saved.data && saved.data.avatar) || url;
      }, function (error) {
        if (error.status === 404 || error.status === 405) throw new IM.util.ApiError(IM.i18n.t('avatarNotSaved'), error.status);
        throw error;
      });
    });
  }

  /** The file an <input type=file> change event picked (and clear the input for the next). */
  function pickedFile(event) {
    var file = event.target.files && event.target.files[0];
    event.target.value = '';
    return file || null;
  }

  window.IM = window.IM || {};
  window.IM.upload = { TYPES: TYPES, ACCEPT: ACCEPT, accepts: accepts, uploadPicture: uploadPicture, uploadAvatar: uploadAvatar,
    uploadFile: uploadFile, uploadVoice: uploadVoice, pickedFile: pickedFile };
})();
