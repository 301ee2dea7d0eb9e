// Unit tests of wx.js (WxWebSocket on a mini-program SocketTask) against a
// shim of the SocketTask API, alone and under WsMesh:
//   node --test web/
// (web_test.go runs every *.test.mjs here, so `go test ./web/` covers it.)
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { WsMesh } from './wsmesh.js';
import { WxWebSocket, wxDefaults } from './wx.js';

// FakeClock is a manual setTimeout/clearTimeout: advance(ms) runs what is due.
class FakeClock {
  constructor(now) {
    this.now = now || 0;
    this.seq = 0;
    this.timers = new Map(); // id -> {at, fn}
    this.setTimeout = (fn, ms) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.now + Math.max(0, ms || 0), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  advance(ms) {
    const end = this.now + ms;
    for (let i = 0; i < 10000; i++) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next.t.at || (t.at === next.t.at && id < next.id))) next = { id, t };
      }
      if (next === null) break;
      this.timers.delete(next.id);
      this.now = next.t.at;
      next.t.fn();
    }
    this.now = end;
  }
}

// flush lets pending promise callbacks run (the adapter's own events).
const flush = () => new Promise((resolve) => setImmediate(resolve));

// FakeTask is a SocketTask as wx.connectSocket returns it: listeners
// registered with onX, send/close taking an object with a fail callback.
// The server-side methods (open, message, emitClose, emitError) call the
// listeners the way the platform does.
class FakeTask {
  constructor(args) {
    this.args = args; // what connectSocket got
    this.listeners = { open: [], message: [], close: [], error: [] };
    this.state = 'connecting'; // the platform's view: connecting, open, closed
    this.sent = []; // data of every send that succeeded
    this.closeCalls = []; // the object of every close call, without fail
    this.sendFails = null; // an errMsg: sends fail (at once, inside send)
  }
  onOpen(fn) {
    this.listeners.open.push(fn);
  }
  onMessage(fn) {
    this.listeners.message.push(fn);
  }
  onClose(fn) {
    this.listeners.close.push(fn);
  }
  onError(fn) {
    this.listeners.error.push(fn);
  }
  send(o) {
    if (this.state !== 'open' || this.sendFails) {
      o.fail({ errMsg: this.sendFails || 'sendSocketMessage:fail WebSocket is not connected' });
      return;
    }
    this.sent.push(o.data);
  }
  close(o) {
    const copy = Object.assign({}, o);
    delete copy.fail;
    this.closeCalls.push(copy);
    // WeChat cannot close a socket still connecting.
    if (this.state === 'connecting' && o.fail) o.fail({ errMsg: 'closeSocket:fail WebSocket is not connected' });
  }
  // platform side
  fire(type, res) {
    for (const fn of this.listeners[type]) fn(res);
  }
  open() {
    this.state = 'open';
    this.fire('open', { header: {} });
  }
  message(frame) {
    this.fire('message', { data: typeof frame === 'string' || frame instanceof ArrayBuffer ? frame : JSON.stringify(frame) });
  }
  emitClose(code, reason) {
    this.state = 'closed';
    this.fire('close', code === undefined ? {} : { code, reason });
  }
  emitError(res) {
    this.fire('error', typeof res === 'string' ? { errMsg: res } : res);
  }
}

// fakeApi is a mini-program API object (wx) whose connectSocket makes
// FakeTasks. failConnect: connectSocket calls its fail callback at once,
// with that errMsg; noTask: it returns nothing (Alipay without multiple).
function fakeApi(opts = {}) {
  const tasks = [];
  const api = {
    connectSocket(args) {
      const task = new FakeTask(args);
      tasks.push(task);
      if (opts.failConnect) args.fail({ errMsg: opts.failConnect });
      return opts.noTask ? undefined : task;
    },
  };
  return { api, tasks, last: () => tasks[tasks.length - 1] };
}

// socket makes a WxWebSocket on a fake API and records its events.
function socket(opts = {}) {
  const clock = new FakeClock(0);
  const { api, tasks, last } = fakeApi(opts.api);
  const ws = new WxWebSocket(opts.url || 'wss://n1/ws', opts.protocols, Object.assign({ api, timers: clock }, opts.options));
  const events = [];
  for (const type of ['open', 'message', 'error', 'close']) {
    ws['on' + type] = (ev) => events.push(ev);
  }
  return { ws, clock, api, tasks, task: last(), events, types: () => events.map((e) => e.type) };
}

// setup builds a WsMesh whose sockets are WxWebSockets on a fake API, and
// records its events.
function setup(opts = {}, urls = ['ws://n1/ws', 'ws://n2/ws', 'ws://n3/ws']) {
  const clock = new FakeClock(1767225600000);
  const { api, tasks, last } = fakeApi(opts.api);
  const events = [];
  const meshOpts = Object.assign(
    {
      token: 'T',
      WebSocket: WxWebSocket.for(api, { timers: clock }),
      timers: clock,
      now: () => clock.now,
      random: () => 0.5,
    },
    opts.mesh
  );
  const mesh = new WsMesh(urls, meshOpts);
  for (const type of ['open', 'close', 'state', 'reconnect', 'evicted', 'unauthorized', 'kicked', 'welcome', 'message', 'error', 'joined']) {
    mesh.on(type, (...args) => events.push([type, ...args]));
  }
  const of = (type) => events.filter((e) => e[0] === type);
  const welcome = (task) => task.message({ type: 'welcome', session: 's1', node: 'n1', user: '42', device: 'mp', expires: Math.floor(clock.now / 1000) + 3600 });
  return { mesh, clock, tasks, last, events, of, welcome };
}

const frames = (task) => task.sent.map((d) => JSON.parse(d));

test('WsMesh connects through connectSocket and gets frames from onMessage', () => {
  const { mesh, tasks, last, of, welcome } = setup();
  assert.equal(tasks.length, 1);
  assert.equal(last().args.url, 'ws://n1/ws?token=T');
  assert.equal(typeof last().args.fail, 'function');
  assert.equal(mesh.state, 'connecting');
  last().open();
  assert.equal(mesh.state, 'open');
  assert.deepEqual(of('open')[0][1], { url: 'ws://n1/ws' });
  welcome(last());
  assert.equal(mesh.session.session, 's1');
  last().message({ type: 'message', id: 'm1', data: { hello: 'world' } });
  assert.deepEqual(of('message').map((e) => [e[1], e[2]]), [[{ hello: 'world' }, 'm1']]);
  mesh.close();
});

test('heartbeats, joins and send() go out through task.send', async (t) => {
  const { mesh, clock, last, welcome } = setup();
  last().open();
  welcome(last());
  clock.advance(25000);
  assert.deepEqual(frames(last()), [{ type: 'ping' }]);

  const joined = mesh.join('live:1');
  const join = frames(last())[1];
  assert.equal(join.type, 'join');
  assert.equal(join.room, 'live:1');
  last().message({ type: 'joined', room: 'live:1' });
  assert.equal(await joined, 'live:1');

  await t.test('send()', async (t) => {
    if (typeof mesh.send !== 'function') {
      t.skip('wsmesh.js has no send() yet');
      return;
    }
    const sent = mesh.send({ text: 'hi' });
    const f = frames(last())[2];
    assert.equal(f.type, 'message');
    assert.deepEqual(f.data, { text: 'hi' });
    last().message({ type: 'ack', id: f.id });
    await sent;
  });
  mesh.close();
});

test('server close codes reach WsMesh with their code and reason', () => {
  for (const tc of [
    { code: 4000, reason: 'evicted by a newer login', welcome: true, state: 'evicted', event: 'evicted', reconnect: false },
    { code: 4001, reason: 'token expired', welcome: false, state: 'unauthorized', event: 'unauthorized', reconnect: false },
    { code: 4003, reason: 'password changed', welcome: true, state: 'kicked', event: 'kicked', reconnect: false },
    { code: 1012, reason: 'node shutting down', welcome: true, state: 'reconnecting', event: 'reconnect', reconnect: true },
    { code: 1000, reason: 'interrupted', welcome: true, state: 'reconnecting', event: 'reconnect', reconnect: true }, // WeChat in the background
  ]) {
    const { mesh, clock, tasks, last, of, welcome } = setup();
    last().open();
    if (tc.welcome) welcome(last());
    last().emitClose(tc.code, tc.reason);
    const name = tc.code + ' ' + tc.reason;
    assert.equal(mesh.state, tc.state, name);
    const closes = of('close');
    assert.equal(closes.length, 1, name);
    assert.deepEqual(closes[0][1], { code: tc.code, reason: tc.reason, wasClean: true, reconnect: tc.reconnect, delay: closes[0][1].delay }, name);
    assert.equal(of(tc.event).length, 1, name);
    if (tc.code === 4003) assert.deepEqual(of('kicked')[0][1], { reason: 'password changed' });
    if (tc.code === 1012) {
      assert.ok(closes[0][1].delay <= 500, name + ': at once, with jitter');
      clock.advance(500);
      assert.equal(tasks.length, 2, name);
      assert.equal(last().args.url, 'ws://n2/ws?token=T', name + ': the next node');
    }
    if (!tc.reconnect) {
      clock.advance(60000);
      assert.equal(tasks.length, 1, name + ': no reconnect');
    }
    mesh.close();
  }
});

test('an error followed by the task close: one close event, with the task code', () => {
  const { ws, task, events, types } = socket();
  task.open();
  task.emitError('network changed');
  assert.equal(ws.readyState, WxWebSocket.CLOSING);
  assert.deepEqual(types(), ['open', 'error']);
  assert.equal(events[1].message, 'network changed');
  task.emitClose(4001, 'token expired');
  assert.deepEqual(types(), ['open', 'error', 'close']);
  assert.equal(events[2].code, 4001);
  assert.equal(events[2].reason, 'token expired');
  assert.equal(events[2].wasClean, true);
  assert.equal(ws.readyState, WxWebSocket.CLOSED);
  task.emitError('again');
  task.emitClose(1006, 'late');
  assert.deepEqual(types(), ['open', 'error', 'close'], 'nothing after the close');
});

test('an error with no close from the task: close 1006 after closeTimeout, and WsMesh reconnects', () => {
  const { mesh, clock, tasks, last, of, welcome } = setup();
  last().open();
  welcome(last());
  const task = last();
  task.emitError('sendSocketMessage:fail network down');
  clock.advance(wxDefaults.closeTimeout - 1);
  assert.equal(of('close').length, 0);
  clock.advance(1);
  assert.deepEqual(of('close').map((e) => e[1]), [{ code: 1006, reason: 'sendSocketMessage:fail network down', wasClean: false, reconnect: true, delay: 375 }]);
  assert.equal(mesh.state, 'reconnecting');
  assert.equal(task.closeCalls.length, 1, 'the task is released');
  task.emitClose(1006, 'abnormal closure');
  assert.equal(of('close').length, 1, 'a late close is ignored');
  clock.advance(375);
  assert.equal(tasks.length, 2);
  mesh.close();
});

test('close() passes its code and reason to task.close; the close event follows the task', () => {
  const { ws, task, events, types } = socket();
  task.open();
  ws.close(4000, 'bye');
  assert.deepEqual(task.closeCalls, [{ code: 4000, reason: 'bye' }]);
  assert.equal(ws.readyState, WxWebSocket.CLOSING);
  ws.close(1000, 'again');
  assert.equal(task.closeCalls.length, 1, 'a second close() does nothing');
  task.emitClose(4000, 'bye');
  assert.deepEqual(types(), ['open', 'close']);
  assert.deepEqual([events[1].code, events[1].reason, events[1].wasClean], [4000, 'bye', true]);

  // Without arguments: none passed, the task's default (1000) applies.
  const s = socket();
  s.task.open();
  s.ws.close();
  assert.deepEqual(s.task.closeCalls, [{}]);

  // WsMesh's close() and its reconnects close with 1000 and a reason.
  const { mesh, last } = setup();
  last().open();
  const first = last();
  mesh.close();
  assert.deepEqual(first.closeCalls, [{ code: 1000, reason: 'client closed' }]);
});

test('close() checks its arguments as a browser does', () => {
  const { ws, task } = socket();
  task.open();
  for (const code of [999, 1001, 1006, 2999, 5000]) {
    assert.throws(() => ws.close(code), { name: 'InvalidAccessError' }, String(code));
  }
  assert.throws(() => ws.close(1000, 'é'.repeat(62)), SyntaxError, '124 bytes');
  assert.throws(() => ws.close(1000, '😀'.repeat(31)), SyntaxError, '124 bytes, in surrogate pairs');
  assert.equal(task.closeCalls.length, 0);
  assert.equal(ws.readyState, WxWebSocket.OPEN);
  ws.close(3000, 'é'.repeat(61) + 'a');
  assert.deepEqual(task.closeCalls, [{ code: 3000, reason: 'é'.repeat(61) + 'a' }]);
});

test('close() while connecting closes the task at its open, and reports no open', () => {
  const { ws, task, events, types } = socket();
  ws.close(1000, 'connect timeout');
  assert.equal(ws.readyState, WxWebSocket.CLOSING);
  assert.deepEqual(task.closeCalls, [{ code: 1000, reason: 'connect timeout' }], 'tried at once');
  task.open();
  assert.deepEqual(task.closeCalls, [{ code: 1000, reason: 'connect timeout' }, { code: 1000, reason: 'connect timeout' }], 'again at the open');
  assert.deepEqual(types(), []);
  task.emitClose(1000, 'connect timeout');
  assert.deepEqual(types(), ['close']);
  assert.equal(events[0].code, 1000);
});

test('close() the task never answers: close 1006 after closeTimeout', () => {
  const { ws, clock, task, events, types } = socket({ options: { closeTimeout: 500 } });
  task.open();
  ws.close(1000, 'done');
  clock.advance(499);
  assert.deepEqual(types(), ['open']);
  clock.advance(1);
  assert.deepEqual(types(), ['open', 'close']);
  assert.deepEqual([events[1].code, events[1].reason, events[1].wasClean], [1006, 'close timeout', false]);
  assert.equal(ws.readyState, WxWebSocket.CLOSED);
});

test('send() before the open throws like the browser; after close() it does nothing', () => {
  const { ws, task } = socket();
  assert.throws(() => ws.send('x'), { name: 'InvalidStateError' });
  if (typeof globalThis.WebSocket === 'function') {
    // The platform's own WebSocket (Node 22+) says the same.
    const real = new globalThis.WebSocket('ws://127.0.0.1:9');
    real.onerror = () => {};
    assert.throws(() => real.send('x'), { name: 'InvalidStateError' });
    real.close();
  }
  task.open();
  ws.send('a');
  ws.close(1000, 'bye');
  ws.send('b');
  assert.deepEqual(task.sent, ['a']);
  task.emitClose(1000, 'bye');
  ws.send('c');
  assert.deepEqual(task.sent, ['a']);
});

test('a failed send fails the connection: error, then close 1006, after send() returns', async () => {
  const { ws, task, events, types } = socket();
  task.open();
  task.sendFails = 'sendSocketMessage:fail WebSocket is not connected';
  ws.send('x');
  assert.deepEqual(types(), ['open'], 'nothing from inside send()');
  assert.equal(ws.readyState, WxWebSocket.CLOSED);
  await flush();
  assert.deepEqual(types(), ['open', 'error', 'close']);
  assert.equal(events[1].message, 'sendSocketMessage:fail WebSocket is not connected');
  assert.deepEqual([events[2].code, events[2].reason, events[2].wasClean], [1006, 'sendSocketMessage:fail WebSocket is not connected', false]);
  assert.equal(task.closeCalls.length, 1, 'the task is released');
  task.emitClose(1006, 'late');
  await flush();
  assert.equal(types().length, 3);
});

test('a failed send under WsMesh: it reconnects and sends the join again', async () => {
  const { mesh, clock, tasks, last, of, welcome } = setup();
  last().open();
  welcome(last());
  last().sendFails = 'sendSocketMessage:fail';
  const joined = mesh.join('live:2');
  await flush();
  assert.deepEqual(of('close').map((e) => [e[1].code, e[1].reconnect]), [[1006, true]]);
  clock.advance(of('close')[0][1].delay);
  assert.equal(tasks.length, 2);
  last().open();
  welcome(last());
  assert.deepEqual(frames(last()), [{ type: 'join', room: 'live:2', id: frames(last())[0].id }]);
  last().message({ type: 'joined', room: 'live:2' });
  assert.equal(await joined, 'live:2');
  mesh.close();
});

test('binary data: views are sent as ArrayBuffers, other values as strings; frames come as given', () => {
  const { ws, task, events } = socket();
  task.open();
  ws.send(new Uint8Array([1, 2, 3]).subarray(1));
  ws.send(42);
  assert.ok(task.sent[0] instanceof ArrayBuffer);
  assert.deepEqual(Array.from(new Uint8Array(task.sent[0])), [2, 3]);
  assert.equal(task.sent[1], '42');
  const buf = new Uint8Array([7]).buffer;
  task.message(buf);
  assert.equal(events[1].data, buf);
  assert.equal(ws.binaryType, 'arraybuffer');
});

test('connectSocket gets the URL, the protocols and the extra connect fields', () => {
  const { api, tasks } = fakeApi();
  const Ws = WxWebSocket.for(api, { connect: { header: { 'X-App': 'mp' }, multiple: true, url: 'ignored' } });
  const ws = new Ws('wss://n1/ws?token=T', 'wsmesh');
  assert.ok(ws instanceof WxWebSocket);
  const args = tasks[0].args;
  assert.equal(args.url, 'wss://n1/ws?token=T');
  assert.deepEqual(args.protocols, ['wsmesh']);
  assert.deepEqual(args.header, { 'X-App': 'mp' });
  assert.equal(args.multiple, true);
  assert.equal(ws.url, 'wss://n1/ws?token=T');
  assert.equal(ws.task, tasks[0]);
  new Ws('wss://n1/ws', ['a', 'b']);
  assert.deepEqual(tasks[1].args.protocols, ['a', 'b']);
  new Ws('wss://n1/ws');
  assert.equal('protocols' in tasks[2].args, false);
});

test('connectSocket failing at once: error and close 1006 reach handlers set after the constructor', async () => {
  const { ws, task, events, types } = socket({ api: { failConnect: 'connectSocket:fail url not in domain list' } });
  assert.equal(ws.readyState, WxWebSocket.CLOSED);
  await flush();
  assert.deepEqual(types(), ['error', 'close']);
  assert.deepEqual([events[1].code, events[1].reason], [1006, 'connectSocket:fail url not in domain list']);
  assert.equal(task.closeCalls.length, 1, 'the task is released');
  task.open();
  assert.deepEqual(types(), ['error', 'close'], 'a late open is not reported');

  // Under WsMesh: a reconnect with backoff.
  const { mesh, of } = setup({ api: { failConnect: 'connectSocket:fail' } });
  await flush();
  assert.deepEqual(of('close').map((e) => [e[1].code, e[1].reason, e[1].reconnect]), [[1006, 'connectSocket:fail', true]]);
  assert.equal(mesh.state, 'reconnecting');
  mesh.close();
});

test('no API object, or no SocketTask: the constructor throws a TypeError, and WsMesh retries', () => {
  assert.throws(() => new WxWebSocket('wss://n1/ws'), TypeError);
  assert.throws(() => new WxWebSocket('wss://n1/ws', undefined, { api: {} }), TypeError);
  const { api } = fakeApi({ noTask: true });
  assert.throws(() => new WxWebSocket('wss://n1/ws', undefined, { api }), /multiple: true/);

  const { mesh, of } = setup({ api: { noTask: true }, mesh: { autoConnect: false } });
  mesh.connect();
  assert.equal(of('error').length, 1);
  assert.ok(of('error')[0][1] instanceof TypeError);
  assert.equal(mesh.state, 'reconnecting');
  mesh.close();
});

test('Alipay results: errorMessage for errors, isBuffer on base64 frames', () => {
  const { task, events } = socket();
  task.open();
  task.fire('message', { data: 'AQI=', isBuffer: true });
  assert.deepEqual([events[1].data, events[1].isBuffer], ['AQI=', true]);
  task.emitError({ error: 10, errorMessage: 'network not open' });
  assert.equal(events[2].message, 'network not open');
  const s = socket();
  s.task.emitError({ error: 12 });
  assert.equal(s.events[0].message, 'socket error: error 12');
});

test('readyState constants are on the class and its instances', () => {
  const { ws } = socket();
  for (const [name, value] of [['CONNECTING', 0], ['OPEN', 1], ['CLOSING', 2], ['CLOSED', 3]]) {
    assert.equal(WxWebSocket[name], value);
    assert.equal(ws[name], value);
  }
  assert.equal(ws.readyState, WxWebSocket.CONNECTING);
});

test('a throwing handler does not stop the socket: its error is rethrown from a timer', () => {
  const { ws, clock, task } = socket();
  const seen = [];
  ws.onopen = () => {
    throw new Error('app bug');
  };
  ws.onmessage = (ev) => seen.push(ev.data);
  task.open();
  task.message('{"type":"pong"}');
  assert.equal(ws.readyState, WxWebSocket.OPEN);
  assert.deepEqual(seen, ['{"type":"pong"}']);
  assert.throws(() => clock.advance(0), /app bug/);
});
