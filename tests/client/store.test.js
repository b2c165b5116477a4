// The web client's store (asset/js/store/) in node, with no window or document: what a chat
// frame, an acknowledgement, a refusal, a receipt and the outbox do to the state, and how the
// view reads it. Run by tests/test_client_store.py (`node --test`).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');

const js = path.resolve(__dirname, '..', '..', 'asset', 'js');
for (const file of ['protocol.js', 'util.js', 'store/outbox.js', 'store/relations.js', 'store/store.js', 'store/view.js']) {
  require(path.join(js, file));
}
const IM = globalThis.IM;
const { CMD, MEDIA } = IM.protocol;

assert.equal(typeof globalThis.window, 'undefined', 'the store must not need a window');
assert.equal(typeof globalThis.document, 'undefined', 'the store must not need a document');

const ME = { id: 1, mobile: '13900000001', nickname: 'Me' };
const t = (key, params) => key + (params ? JSON.stringify(params) : '');

function text(id, userid, dstid, content, extra) {
  return Object.assign({ id, userid, cmd: CMD.SINGLE, dstid, media: MEDIA.TEXT, content, ts: 1000 + id }, extra);
}

test('a message is stored once, in id order, whichever way it arrives', () => {
  const store = IM.createStore({ me: ME });
  const conv = store.receive(text(7, 2, 1, 'second')).conv;
  assert.equal(conv.key, CMD.SINGLE + ':2');       // the peer's conversation, from my side
  assert.equal(store.receive(text(7, 2, 1, 'second')), null);   // the same frame again
  store.addMessage(text(5, 2, 1, 'first'));        // history arriving later
  assert.deepEqual(conv.messages.map((m) => m.content), ['first', 'second']);
  assert.equal(conv.last.id, 7);
});

test('a pending message is replaced by its acknowledged copy, not duplicated', () => {
  const store = IM.createStore({ me: ME });
  const frame = { cmd: CMD.SINGLE, dstid: 2, media: MEDIA.TEXT, content: 'hi', cid: 'c1' };
  const conv = store.addPending(frame, 5000);
  assert.equal(conv.messages[0].status, 'sending');
  assert.equal(store.addPending(frame, 5001), null);
  store.applyAck({ cmd: CMD.ACK, cid: 'c1', id: 40, tcmd: CMD.SINGLE, dstid: 2, ts: 6000 });
  assert.equal(conv.messages.length, 1);
  assert.equal(conv.messages[0].id, 40);
  assert.equal(conv.messages[0].status, 'sent');
  // The echo of my own message from another device or a sync: still one copy.
  assert.equal(store.receive(text(40, 1, 2, 'hi', { cid: 'c1' })), null);
  assert.equal(conv.messages.length, 1);
  assert.equal(conv.readId, 40);
});

test('a refusal fails the message unless it means "later"', () => {
  const store = IM.createStore({ me: ME });
  const conv = store.addPending({ cmd: CMD.SINGLE, dstid: 2, media: MEDIA.TEXT, content: 'x', cid: 'c2' }, 1);
  store.applyRefused({ cmd: CMD.REFUSED, cid: 'c2', reason: IM.protocol.RETRY_REASONS[0], msg: 'slow' });
  assert.equal(conv.messages[0].status, 'sending');
  store.applyRefused({ cmd: CMD.REFUSED, cid: 'c2', reason: 'forbidden', msg: 'not a friend' });
  assert.equal(conv.messages[0].status, 'failed');
  assert.equal(conv.messages[0].error, 'not a friend');
  const again = store.retryFrame(conv.messages[0]);
  assert.equal(again.cid, 'c2');
  assert.equal(conv.messages[0].status, 'sending');
});

test('unread counts, receipts and the read labels', () => {
  const store = IM.createStore({ me: ME });
  const view = IM.createView(store, t);
  const incoming = store.receive(text(10, 2, 1, 'hello'));
  assert.equal(incoming.unseen, true);
  assert.equal(incoming.needFriends, true);
  const conv = incoming.conv;
  store.addMessage(text(11, 1, 2, 'mine'));
  assert.equal(store.countUnread(conv), 1);
  store.applyReceipt({ cmd: CMD.READ, userid: 1, tcmd: CMD.SINGLE, dstid: 2, id: 10 });   // read elsewhere
  assert.equal(conv.unread, 0);
  const mine = conv.messages[1];
  assert.equal(view.readLabel(conv, mine).text, 'unread');
  store.applyReceipt({ cmd: CMD.READ, userid: 2, tcmd: CMD.SINGLE, dstid: 1, id: 11 });
  assert.deepEqual(view.readLabel(conv, mine), { done: true, text: 'read' });
  const rows = view.rows(conv, 2000);
  assert.deepEqual(rows.map((r) => r.type), ['time', 'msg', 'msg']);
  assert.equal(rows[2].mine, true);
});

test('group receipts count members; typing and presence come and go', () => {
  const store = IM.createStore({ me: ME });
  const view = IM.createView(store, t);
  store.setGroups([{ id: 9, name: 'team' }]);
  store.setMembers(9, [ME, { id: 2, mobile: 'b', online: true }, { id: 3, mobile: 'c' }]);
  assert.equal(store.state.online[2], true);
  const conv = store.receive(Object.assign(text(20, 1, 9, 'all'), { cmd: CMD.GROUP })).conv;
  const msg = conv.messages[0];
  store.applyReceipts(conv, [{ userid: 2, id: 20 }]);
  assert.equal(view.readLabel(conv, msg).text, 'readBy{"n":1}');
  store.applyReceipt({ cmd: CMD.READ, userid: 3, tcmd: CMD.GROUP, dstid: 9, id: 20 });
  assert.equal(view.readLabel(conv, msg).text, 'allRead');
  assert.equal(store.receive(Object.assign(text(21, 4, 9, 'new'), { cmd: CMD.GROUP })).needMembers, true);

  store.applyTyping({ cmd: CMD.TYPING, userid: 2, tcmd: CMD.GROUP, dstid: 9 }, 5000);
  assert.match(view.typingText(conv, 4000), /^typing/);
  store.expireTyping(6000);
  assert.equal(view.typingText(conv, 6000), '');

  store.applyPresence({ cmd: CMD.PRESENCE, online: [3] });
  assert.equal(store.state.online[3], true);
  store.forgetPresence();
  assert.equal(store.state.online[3], false);
});

test('the outbox keeps frames in order in the storage it is given', () => {
  const saved = {};
  const storage = {
    getItem: (key) => (key in saved ? saved[key] : null),
    setItem: (key, value) => { saved[key] = value; },
    removeItem: (key) => { delete saved[key]; }
  };
  const outbox = new IM.Outbox(storage, 'k');
  outbox.push({ cid: 'a', content: '1' });
  outbox.push({ cid: 'b', content: '2' });
  assert.deepEqual(new IM.Outbox(storage, 'k').frames().map((f) => f.cid), ['a', 'b']);   // a reload
  outbox.drop('a');
  outbox.drop('b');
  assert.equal('k' in saved, false);
  const broken = { getItem: () => { throw new Error('disabled'); }, setItem: () => { throw new Error('full'); } };
  const memoryOnly = new IM.Outbox(broken, 'k');
  memoryOnly.push({ cid: 'c' });
  assert.equal(memoryOnly.frames().length, 1);
  assert.equal(new IM.Outbox(null, 'k').frames().length, 0);
});

test('entries change the message they name, once, and are neither messages nor unread', () => {
  const { REL } = IM.protocol;
  const store = IM.createStore({ me: ME });
  const conv = store.receive(text(5, 2, 1, 'typo')).conv;
  const entry = (id, rel, extra) => text(id, 2, 1, '[notice]', Object.assign({ rel, ref: 5 }, extra));
  const edited = store.receive(entry(6, REL.EDIT, { text: 'fixed', ts: 1234 }));
  assert.deepEqual([edited.change, edited.unseen], [true, false]);
  assert.equal(store.receive(entry(6, REL.EDIT, { text: 'fixed' })), null);   // the same entry again
  store.receive(entry(7, REL.REACT, { text: '👍' }));
  store.receive(text(8, 1, 2, 'mine', { rel: REL.REACT, ref: 5, text: '👍', cmd: CMD.SINGLE }));
  store.receive(entry(9, REL.UNREACT, { text: '👍' }));
  assert.deepEqual(conv.messages.map((m) => [m.id, m.content, m.edited]), [[5, 'fixed', 1234]]);
  assert.deepEqual(conv.messages[0].reactions, [{ emoji: '👍', users: [1] }]);
  assert.equal(conv.last.id, 5);
  assert.equal(conv.lastId, 9);
  store.receive(entry(10, REL.RECALL, { content: '[recalled a message]' }));
  assert.deepEqual([conv.messages[0].recalled, conv.messages[0].content, conv.messages[0].reactions], [1, '[recalled a message]', []]);
  store.receive(entry(11, REL.EDIT, { text: 'too late' }));
  assert.equal(conv.messages[0].content, '[recalled a message]');
  const view = IM.createView(store, t);
  assert.equal(view.previewOf(conv.last), 'recalledPreview');
});

test('a reply quotes the loaded original, else what the server sent; mentions name me', () => {
  const { REL } = IM.protocol;
  const store = IM.createStore({ me: ME });
  const conv = store.receive(text(5, 2, 1, 'question')).conv;
  store.receive(text(6, 1, 2, 'answer', { ref: 5, rel: REL.REPLY }));
  const rows = IM.createView(store, t).rows(conv, 0).filter((r) => r.type === 'msg');
  assert.deepEqual(rows[1].quote, { id: 5, userid: 2, media: MEDIA.TEXT, content: 'question', recalled: undefined });
  const old = { ref: 1, rel: REL.REPLY, quote: { id: 1, userid: 2, media: MEDIA.TEXT, content: 'long ago' } };
  assert.equal(IM.relations.quoteOf(conv, old).content, 'long ago');
  assert.equal(IM.relations.mentions({ at: [1] }, 1), true);
  assert.equal(IM.relations.mentions({ atall: 1 }, 1), true);
  assert.equal(IM.relations.mentions({ at: [3] }, 1), false);
});

test('a muted conversation adds only its mentions to the total', () => {
  const store = IM.createStore({ me: ME });
  store.applyConversations([
    { cmd: CMD.GROUP, dstid: 7, unread: 5, mentions: 1, muted: 1, read_id: 0, last: text(3, 2, 7, 'x', { cmd: CMD.GROUP }) },
    { cmd: CMD.SINGLE, dstid: 2, unread: 2, mentions: 0, muted: 0, read_id: 0, last: text(4, 2, 1, 'y') }
  ]);
  assert.equal(store.totalUnread(), 3);
});

test('a file message reads as a file: its name, size, type and a checked link', () => {
  const store = IM.createStore({ me: ME });
  const view = IM.createView(store, t);
  const file = text(9, 2, 1, '报告.pdf', { media: MEDIA.FILE, url: '/resource/' + 'a'.repeat(32) + '.bin',
    amount: 2048, memo: 'application/pdf' });
  const conv = store.receive(file).conv;
  const row = view.rows(conv, 2000).find((r) => r.type === 'msg');
  assert.equal(row.kind, 'file');
  assert.deepEqual([row.file.name, row.file.size, row.file.mime, row.file.src],
    ['报告.pdf', 2048, 'application/pdf', '/resource/' + 'a'.repeat(32) + '.bin']);
  assert.equal(view.preview(conv), 'filePreview{"name":"报告.pdf"}');
  // A link that is not this server's file is not offered.
  const foreign = text(10, 2, 1, 'x.pdf', { media: MEDIA.FILE, url: 'https://evil.example/x.pdf' });
  store.receive(foreign);
  assert.equal(view.rows(conv, 2000).filter((r) => r.type === 'msg')[1].kind, 'unsupported');
});
