// Unit tests of wsmesh.js with a fake WebSocket and a fake clock:
//   node --test web/
// (web_test.go runs this file too, so `go test ./web/` covers it.)
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { WsMesh, CloseCode, backoffDelay, refreshDelay, defaults } from './wsmesh.js';

// FakeClock is a manual setTimeout/clearTimeout: advance(ms) runs what is due.
class FakeClock {
  constructor(now) {
    this.now = now || 0; // ms, like Date.now()
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

  pending() {
    return this.timers.size;
  }

  // advance moves time forward, running due timers in order (bounded).
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

// T0 is the fake clock's start in setup: a plausible Date.now().
const T0 = 1767225600000; // 2026-01-01T00:00:00Z
const nowSec = (clock) => Math.floor(clock.now / 1000);

// flush lets pending promise callbacks (getToken's) run.
const flush = () => new Promise((resolve) => setImmediate(resolve));

// welcome is the first frame the server sends, with a token good for ttl s.
function welcome(clock, session, ttl, extra) {
  return { type: 'welcome', session, node: 'n2', user: '42', device: 'web', expires: nowSec(clock) + ttl, ...extra };
}

// refreshes returns the refresh frames a socket sent, parsed.
function refreshes(ws) {
  return ws.sent.map((d) => JSON.parse(d)).filter((f) => f.type === 'refresh');
}

// fakeSockets returns a FakeWebSocket class and the list of its instances.
function fakeSockets() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null; // [code, reason] when the client called close()
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(data);
    }
    close(code, reason) {
      this.closedWith = [code, reason];
      this.readyState = 2;
    }
    // server side
    serverOpen() {
      this.readyState = 1;
      if (this.onopen) this.onopen({});
    }
    serverSend(frame) {
      if (this.onmessage) this.onmessage({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }
    serverClose(code, reason) {
      this.readyState = 3;
      if (this.onclose) this.onclose({ code, reason: reason || '', wasClean: code !== 1006 });
    }
  }
  return { FakeWebSocket, sockets };
}

// setup builds a WsMesh on fakes and records its events.
function setup(opts = {}, urls = ['ws://n1/ws', 'ws://n2/ws', 'ws://n3/ws']) {
  const clock = new FakeClock(T0);
  const { FakeWebSocket, sockets } = fakeSockets();
  const events = [];
  const mesh = new WsMesh(urls, {
    token: 'T',
    WebSocket: FakeWebSocket,
    timers: clock,
    now: () => clock.now,
    random: () => 0.5,
    ...opts,
  });
  for (const type of ['open', 'close', 'state', 'reconnect', 'evicted', 'unauthorized', 'kicked', 'welcome', 'refreshed', 'message', 'pong', 'error', 'frame', 'joined', 'left']) {
    mesh.on(type, (...args) => events.push([type, ...args]));
  }
  const last = () => sockets[sockets.length - 1];
  const of = (type) => events.filter((e) => e[0] === type);
  return { mesh, clock, sockets, last, events, of };
}

test('connects with the token and hands messages to onmessage(data, id)', () => {
  const { mesh, sockets, last, of } = setup();
  assert.equal(sockets.length, 1);
  assert.equal(last().url, 'ws://n1/ws?token=T');
  assert.equal(mesh.state, 'connecting');
  last().serverOpen();
  assert.equal(mesh.state, 'open');
  assert.deepEqual(of('open')[0][1], { url: 'ws://n1/ws' });
  const got = [];
  mesh.onmessage = (data, id) => got.push([data, id]);
  last().serverSend({ type: 'message', id: 'm1', data: { hello: 'world' } });
  last().serverSend('not json');
  last().serverSend({ type: 'message', id: 'm2', data: 7 });
  assert.deepEqual(got, [[{ hello: 'world' }, 'm1'], [7, 'm2']]);
  assert.equal(of('message').length, 2);
  mesh.close();
});

test('the token is URL-encoded and appended to a URL that has a query', () => {
  const { last, mesh } = setup({ token: 'a+b/c=' }, ['ws://n1/ws?x=1']);
  assert.equal(last().url, 'ws://n1/ws?x=1&token=a%2Bb%2Fc%3D');
  mesh.close();
});

test('backoffDelay grows, is jittered within [base/2, base] and is capped', () => {
  const b = { min: 500, max: 30000, factor: 2 };
  let prevHigh = 0;
  for (let n = 0; n < 12; n++) {
    const base = Math.min(30000, 500 * 2 ** n);
    const lo = backoffDelay(n, b, () => 0);
    const hi = backoffDelay(n, b, () => 0.999999);
    assert.equal(lo, base / 2, `attempt ${n}: low end`);
    assert.ok(hi > lo && hi <= base, `attempt ${n}: jitter ${lo}..${hi} within base ${base}`);
    assert.ok(hi >= prevHigh, `attempt ${n}: does not shrink`);
    assert.ok(hi <= b.max, `attempt ${n}: capped`);
    prevHigh = hi;
  }
  assert.equal(backoffDelay(50, b, () => 0.999999), 30000);
  // Different random draws give different delays: the jitter spreads clients.
  const spread = new Set([0, 0.25, 0.5, 0.75].map((r) => backoffDelay(4, b, () => r)));
  assert.equal(spread.size, 4);
  assert.deepEqual(defaults.backoff, { min: 500, max: 30000, factor: 2 });
});

test('failed connections back off exponentially, jittered and capped, rotating URLs', () => {
  let r = 0;
  const draws = [0.1, 0.9, 0.3, 0.7, 0.5];
  const { mesh, clock, sockets, last, of } = setup({ random: () => draws[r++ % draws.length], backoff: { min: 100, max: 2000 } });
  const delays = [];
  for (let i = 0; i < 9; i++) {
    last().serverClose(1006); // refused: never opened
    const rc = of('reconnect').at(-1)[1];
    delays.push(rc.delay);
    assert.equal(mesh.state, 'reconnecting');
    const before = sockets.length;
    clock.advance(rc.delay - 1);
    assert.equal(sockets.length, before, 'no dial before the delay');
    clock.advance(1);
    assert.equal(sockets.length, before + 1, 'dials when the delay is over');
  }
  for (let i = 0; i < delays.length; i++) {
    const base = Math.min(2000, 100 * 2 ** i);
    assert.ok(delays[i] >= base / 2 && delays[i] <= base, `delay ${i} = ${delays[i]}, base ${base}`);
  }
  assert.ok(delays[5] > delays[0] * 4, `grows: ${delays}`);
  assert.ok(Math.max(...delays) <= 2000, `capped: ${delays}`);
  assert.equal(new Set(delays.slice(5)).size > 1, true, `jittered at the cap: ${delays}`);
  assert.deepEqual(
    sockets.slice(0, 4).map((s) => s.url.split('?')[0]),
    ['ws://n1/ws', 'ws://n2/ws', 'ws://n3/ws', 'ws://n1/ws'],
    'each reconnect tries the next URL'
  );
  mesh.close();
});

test('1012 reconnects at once (small jitter) to the next node', () => {
  const { mesh, clock, sockets, last, of } = setup({ random: () => 0.5, restartJitter: 200 });
  last().serverOpen();
  clock.advance(3000);
  last().serverClose(CloseCode.SERVER_RESTART, 'node shutting down');
  const close = of('close').at(-1)[1];
  assert.equal(close.code, 1012);
  assert.equal(close.reconnect, true);
  assert.equal(close.delay, 100, 'jitter only: random 0.5 of restartJitter 200');
  assert.equal(mesh.state, 'reconnecting');
  clock.advance(100);
  assert.equal(sockets.length, 2);
  assert.equal(last().url, 'ws://n2/ws?token=T');
  last().serverOpen();
  assert.equal(mesh.state, 'open');
  mesh.close();
});

test('repeated 1012 without a stable connection falls back to backoff', () => {
  const { mesh, clock, last, of } = setup({ random: () => 0, restartJitter: 1000, backoff: { min: 400, max: 5000 } }, ['ws://a/ws', 'ws://b/ws']);
  const delays = [];
  for (let i = 0; i < 4; i++) {
    last().serverOpen();
    last().serverClose(1012);
    delays.push(of('reconnect').at(-1)[1].delay);
    clock.advance(delays.at(-1));
  }
  assert.deepEqual(delays, [0, 0, 200, 400], 'two quick reconnects (two URLs), then backoff');
  mesh.close();
});

test('4000 emits "evicted" once and does not reconnect', () => {
  const { mesh, clock, sockets, last, of } = setup();
  const fired = [];
  mesh.onevicted = (e) => fired.push(e);
  last().serverOpen();
  last().serverSend({ type: 'evicted', reason: 'duplicate_login' });
  assert.equal(mesh.state, 'evicted');
  last().serverClose(CloseCode.EVICTED, 'evicted by a newer login');
  assert.equal(of('evicted').length, 1);
  assert.deepEqual(fired, [{ reason: 'duplicate_login' }]);
  assert.equal(of('close').at(-1)[1].reconnect, false);
  clock.advance(10 * 60 * 1000);
  assert.equal(sockets.length, 1, 'no reconnect');
  assert.equal(clock.pending(), 0, 'no timer left');
  assert.equal(mesh.state, 'evicted');
  // The app may take over again on purpose.
  mesh.connect();
  assert.equal(sockets.length, 2);
  assert.equal(mesh.state, 'connecting');
  mesh.close();
});

test('4000 without the evicted frame still counts as evicted', () => {
  const { mesh, clock, sockets, last, of } = setup();
  last().serverOpen();
  last().serverClose(4000, 'evicted by a newer login');
  assert.equal(mesh.state, 'evicted');
  assert.equal(of('evicted').length, 1);
  clock.advance(60000);
  assert.equal(sockets.length, 1);
  mesh.close();
});

test('4001 emits "unauthorized", does not reconnect; connect() asks getToken again', async () => {
  let n = 0;
  const { mesh, clock, sockets, last, of } = setup({ token: undefined, getToken: async () => `tok${++n}` });
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(last().url, 'ws://n1/ws?token=tok1');
  last().serverOpen();
  last().serverClose(CloseCode.UNAUTHORIZED, 'token expired');
  assert.equal(mesh.state, 'unauthorized');
  assert.deepEqual(of('unauthorized')[0][1], { reason: 'token expired' });
  clock.advance(10 * 60 * 1000);
  assert.equal(sockets.length, 1, 'no reconnect with the same token');
  assert.equal(clock.pending(), 0);
  mesh.connect();
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(sockets.length, 2);
  assert.equal(last().url, 'ws://n1/ws?token=tok2');
  mesh.close();
});

test('4002 reconnects with backoff', () => {
  const { mesh, clock, sockets, last, of } = setup({ random: () => 0.5 });
  last().serverOpen();
  last().serverClose(CloseCode.SLOW_CONSUMER, 'slow consumer: send queue full');
  const rc = of('reconnect').at(-1)[1];
  assert.equal(rc.delay, 375, 'min 500 with equal jitter at 0.5');
  clock.advance(374);
  assert.equal(sockets.length, 1);
  clock.advance(1);
  assert.equal(sockets.length, 2);
  // A second 4002 soon after waits longer.
  last().serverOpen();
  last().serverClose(4002);
  assert.equal(of('reconnect').at(-1)[1].delay, 750);
  mesh.close();
});

test('heartbeat: pings, a pong keeps it, silence drops and reconnects', () => {
  const { mesh, clock, sockets, last, of } = setup({ heartbeat: 1000, heartbeatTimeout: 500, random: () => 0 });
  const ws = last();
  ws.serverOpen();
  clock.advance(1000);
  assert.deepEqual(ws.sent, ['{"type":"ping"}']);
  clock.advance(400);
  ws.serverSend({ type: 'pong' });
  assert.equal(of('pong').length, 1);
  clock.advance(600); // second ping at 2000
  assert.equal(ws.sent.length, 2);
  // Any frame counts as a sign of life, not just a pong.
  ws.serverSend({ type: 'message', id: 'x', data: 1 });
  clock.advance(1000); // third ping at 3000, then silence
  assert.equal(ws.sent.length, 3);
  assert.equal(mesh.state, 'open');
  clock.advance(499);
  assert.equal(mesh.state, 'open');
  clock.advance(1);
  assert.deepEqual(ws.closedWith, [1000, 'heartbeat timeout'], 'the dead socket is closed by the client');
  const close = of('close').at(-1)[1];
  assert.equal(close.code, CloseCode.ABNORMAL);
  assert.equal(close.reason, 'heartbeat timeout');
  assert.equal(mesh.state, 'reconnecting');
  ws.serverClose(1006); // a late close of the dropped socket is ignored
  assert.equal(of('close').length, 1);
  clock.advance(of('reconnect').at(-1)[1].delay);
  assert.equal(sockets.length, 2);
  assert.equal(last().url, 'ws://n2/ws?token=T');
  mesh.close();
});

test('a socket that does not open within connectTimeout is dropped', () => {
  const { mesh, clock, sockets, last, of } = setup({ connectTimeout: 300, random: () => 0 });
  clock.advance(300);
  assert.equal(of('close').at(-1)[1].reason, 'connect timeout');
  assert.deepEqual(sockets[0].closedWith, [1000, 'connect timeout']);
  clock.advance(250);
  assert.equal(sockets.length, 2);
  last().serverOpen();
  assert.equal(mesh.state, 'open');
  mesh.close();
});

test('a stable connection resets the backoff', () => {
  const { mesh, clock, last, of } = setup({ random: () => 0, stableAfter: 5000 });
  for (let i = 0; i < 3; i++) {
    last().serverClose(1006);
    clock.advance(of('reconnect').at(-1)[1].delay);
  }
  assert.equal(mesh.attempt, 3);
  last().serverOpen();
  clock.advance(5000);
  assert.equal(mesh.attempt, 0);
  last().serverClose(1000, 'idle timeout');
  assert.equal(of('reconnect').at(-1)[1].delay, 250);
  mesh.close();
});

test('close() stops every timer and the socket, and nothing reconnects', () => {
  const { mesh, clock, sockets, last, of } = setup({ heartbeat: 1000 });
  const ws = last();
  ws.serverOpen();
  assert.ok(clock.pending() > 0, 'heartbeat and stable timers run while open');
  mesh.close();
  assert.equal(clock.pending(), 0);
  assert.deepEqual(ws.closedWith, [1000, 'client closed']);
  assert.equal(mesh.state, 'closed');
  ws.serverClose(1000);
  clock.advance(10 * 60 * 1000);
  assert.equal(sockets.length, 1);
  assert.equal(ws.sent.length, 0, 'no ping after close');
  assert.equal(of('close').length, 0);
});

test('close() while a reconnect is scheduled cancels it', () => {
  const { mesh, clock, sockets, last } = setup();
  last().serverClose(1006);
  assert.equal(mesh.state, 'reconnecting');
  mesh.close();
  assert.equal(clock.pending(), 0);
  clock.advance(60000);
  assert.equal(sockets.length, 1);
});

test('close() while getToken is pending: the token is not used', async () => {
  let resolve;
  const { mesh, clock, sockets } = setup({ getToken: () => new Promise((r) => (resolve = r)) });
  mesh.close();
  resolve('late');
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(sockets.length, 0);
  assert.equal(clock.pending(), 0);
});

test('a failing getToken backs off and retries', async () => {
  let calls = 0;
  const { mesh, clock, sockets, of } = setup({
    random: () => 0,
    getToken: () => {
      calls++;
      if (calls === 1) throw new Error('auth server down');
      return 'ok';
    },
  });
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(of('error').length, 1);
  assert.equal(mesh.state, 'reconnecting');
  clock.advance(250);
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url, 'ws://n2/ws?token=ok');
  mesh.close();
});

test('a throwing listener does not break the client', () => {
  const { FakeWebSocket, sockets } = fakeSockets();
  const clock = new FakeClock();
  const mesh = new WsMesh('ws://n1/ws', { token: 'T', WebSocket: FakeWebSocket, timers: clock, autoConnect: false });
  assert.equal(mesh.state, 'idle');
  assert.equal(sockets.length, 0, 'autoConnect: false');
  const errors = [];
  const orig = globalThis.setTimeout;
  globalThis.setTimeout = (fn) => errors.push(fn); // where listener errors are rethrown
  try {
    mesh.onopen = () => {
      throw new Error('app bug');
    };
    const got = [];
    mesh.on('message', (d) => got.push(d));
    mesh.connect();
    sockets[0].serverOpen();
    sockets[0].serverSend({ type: 'message', id: '1', data: 'still works' });
    assert.deepEqual(got, ['still works']);
    assert.equal(errors.length, 1);
    assert.throws(errors[0], /app bug/);
  } finally {
    globalThis.setTimeout = orig;
  }
  mesh.close();
});

test('on() returns an unsubscribe function', () => {
  const { mesh, last } = setup();
  const got = [];
  const off = mesh.on('message', (d) => got.push(d));
  last().serverOpen();
  last().serverSend({ type: 'message', id: '1', data: 1 });
  off();
  last().serverSend({ type: 'message', id: '2', data: 2 });
  assert.deepEqual(got, [1]);
  mesh.close();
});

test('welcome: mesh.session and a "welcome" event, a new one per connection, null in between', () => {
  const { mesh, clock, last, of } = setup({ random: () => 0 });
  const fired = [];
  mesh.onwelcome = (s) => fired.push(s.session);
  assert.equal(mesh.session, null, 'null before any welcome');
  last().serverOpen();
  assert.equal(mesh.session, null, 'null between open and welcome');
  last().serverSend(welcome(clock, 's-1', 3600, { extra: 'ignored' }));
  const want = { session: 's-1', node: 'n2', user: '42', device: 'web', expires: nowSec(clock) + 3600 };
  assert.deepEqual(mesh.session, want);
  assert.deepEqual(of('welcome').map((e) => e[1]), [want]);
  assert.deepEqual(fired, ['s-1'], 'the onwelcome property fires too');
  assert.equal(of('frame').length, 0);
  last().serverClose(1006);
  assert.equal(mesh.session, null, 'null once the socket closed');
  clock.advance(of('reconnect').at(-1)[1].delay);
  last().serverOpen();
  last().serverSend(welcome(clock, 's-2', 3600));
  assert.equal(mesh.session.session, 's-2');
  assert.deepEqual(of('welcome').map((e) => e[1].session), ['s-1', 's-2']);
  mesh.close();
  assert.equal(mesh.session, null);
});

test('4003 emits "kicked" with the backend\'s reason and does not reconnect', () => {
  const { mesh, clock, sockets, last, of } = setup();
  last().serverOpen();
  last().serverSend(welcome(clock, 's-1', 3600));
  last().serverClose(CloseCode.KICKED, 'account suspended');
  assert.equal(mesh.state, 'kicked');
  assert.deepEqual(of('kicked').map((e) => e[1]), [{ reason: 'account suspended' }]);
  assert.equal(of('close').at(-1)[1].reconnect, false);
  assert.equal(of('reconnect').length, 0);
  assert.equal(of('unauthorized').length, 0);
  assert.equal(mesh.session, null);
  assert.equal(clock.pending(), 0, 'no timer left');
  clock.advance(10 * 60 * 1000);
  assert.equal(sockets.length, 1, 'no reconnect');
  mesh.connect(); // the app may connect again on purpose
  assert.equal(sockets.length, 2);
  mesh.close();
});

test('4008 reconnects with backoff, which grows while the client keeps tripping it', () => {
  const { mesh, clock, sockets, last, of } = setup({ random: () => 0.5 });
  last().serverOpen();
  last().serverClose(CloseCode.TOO_MANY_MESSAGES, 'too many messages');
  assert.equal(mesh.state, 'reconnecting');
  assert.equal(of('close').at(-1)[1].reconnect, true);
  assert.equal(of('reconnect').at(-1)[1].delay, 375, 'backoff, not an immediate reconnect');
  clock.advance(375);
  assert.equal(sockets.length, 2);
  last().serverOpen();
  last().serverClose(4008, 'too many messages');
  assert.equal(of('reconnect').at(-1)[1].delay, 750);
  mesh.close();
});

test('4001 "token expired" in a session reconnects with a fresh token from getToken; refused again, it stops', async () => {
  let n = 0;
  const { mesh, clock, sockets, last, of } = setup({ token: undefined, getToken: async () => `tok${++n}`, random: () => 0 });
  await flush();
  last().serverOpen();
  last().serverSend(welcome(clock, 's-1', 3600));
  last().serverClose(CloseCode.UNAUTHORIZED, 'token expired');
  assert.equal(mesh.state, 'reconnecting');
  assert.equal(of('unauthorized').length, 0);
  const close = of('close').at(-1)[1];
  assert.deepEqual([close.code, close.reason, close.reconnect], [4001, 'token expired', true]);
  clock.advance(of('reconnect').at(-1)[1].delay);
  await flush();
  assert.equal(sockets.length, 2);
  assert.equal(last().url, 'ws://n2/ws?token=tok2', 'a fresh token');
  // The server refuses that one too: no welcome, so no more tries.
  last().serverOpen();
  last().serverClose(CloseCode.UNAUTHORIZED, 'token expired');
  assert.equal(mesh.state, 'unauthorized');
  assert.equal(of('unauthorized').length, 1);
  clock.advance(10 * 60 * 1000);
  await flush();
  assert.equal(sockets.length, 2);
  assert.equal(clock.pending(), 0);
  mesh.close();
});

test('4001 in a session without getToken stops: the token cannot change by itself', () => {
  const { mesh, clock, sockets, last, of } = setup();
  last().serverOpen();
  last().serverSend(welcome(clock, 's-1', 60));
  last().serverClose(CloseCode.UNAUTHORIZED, 'token expired');
  assert.equal(mesh.state, 'unauthorized');
  assert.equal(of('unauthorized').length, 1);
  clock.advance(10 * 60 * 1000);
  assert.equal(sockets.length, 1);
  mesh.close();
});

test('refreshDelay: 80% or 30 s before expiry if earlier, not before half, at least 1 s', () => {
  assert.equal(refreshDelay(3600e3), 2880e3, '1 h: at 80%, 12 min early');
  assert.equal(refreshDelay(120e3), 90e3, '2 min: 30 s early, more than 20%');
  assert.equal(refreshDelay(45e3), 22500, '45 s: half, not 15 s');
  assert.equal(refreshDelay(4e3), 2e3, '4 s: half');
  assert.equal(refreshDelay(0), 1000);
  assert.equal(refreshDelay(-60e3), 1000, 'a clock ahead of the server: no loop faster than 1/s');
  assert.equal(refreshDelay(3600e3, 0), 2880e3);
  assert.equal(refreshDelay(600e3, 300e3), 300e3, 'a margin of its own');
});

test('refresh: sent before expiry with a getToken token; "refreshed" updates expires and re-arms', async () => {
  let n = 0;
  const { mesh, clock, last, of } = setup({ token: undefined, getToken: async () => `tok${++n}`, heartbeat: 0 });
  await flush();
  const ws = last();
  ws.serverOpen();
  ws.serverSend(welcome(clock, 's-1', 3600));
  clock.advance(2880e3 - 1);
  await flush();
  assert.equal(refreshes(ws).length, 0, 'nothing before 80% of the lifetime');
  clock.advance(1);
  await flush();
  assert.deepEqual(refreshes(ws), [{ type: 'refresh', token: 'tok2' }]);
  const exp2 = nowSec(clock) + 3600;
  ws.serverSend({ type: 'refreshed', expires: exp2 });
  assert.equal(mesh.session.expires, exp2);
  assert.equal(mesh.session.session, 's-1', 'the same session');
  assert.deepEqual(of('refreshed').map((e) => e[1]), [{ expires: exp2, session: 's-1' }]);
  assert.equal(of('error').length, 0);
  // The next one follows the new expiry.
  clock.advance(2880e3);
  await flush();
  assert.deepEqual(refreshes(ws).map((f) => f.token), ['tok2', 'tok3']);
  ws.serverSend({ type: 'refreshed', expires: nowSec(clock) + 3600 });
  assert.equal(of('refreshed').length, 2);
  assert.equal(of('open').length, 1, 'never reconnected');
  mesh.close();
  assert.equal(clock.pending(), 0);
});

test('refresh: a short-lived token is refreshed at half its life, not in a loop', async () => {
  let n = 0;
  const { mesh, clock, last } = setup({ token: undefined, getToken: () => `tok${++n}`, heartbeat: 0 });
  await flush();
  const ws = last();
  ws.serverOpen();
  ws.serverSend(welcome(clock, 's-1', 4));
  for (let i = 0; i < 5; i++) {
    clock.advance(1999);
    await flush();
    assert.equal(refreshes(ws).length, i, `round ${i}: not yet`);
    clock.advance(1);
    await flush();
    assert.equal(refreshes(ws).length, i + 1, `round ${i}: sent`);
    ws.serverSend({ type: 'refreshed', expires: nowSec(clock) + 4 });
  }
  mesh.close();
});

test('refresh: a token beyond setTimeout\'s range waits instead of firing at once', async () => {
  const { mesh, clock, last } = setup({ token: undefined, getToken: () => 'tok', heartbeat: 0 });
  await flush();
  const ws = last();
  ws.serverOpen();
  ws.serverSend(welcome(clock, 's-1', 90 * 86400));
  clock.advance(60 * 1000);
  await flush();
  assert.equal(refreshes(ws).length, 0);
  clock.advance(72 * 86400e3 - 60e3); // 80% of 90 days
  await flush();
  assert.equal(refreshes(ws).length, 1);
  mesh.close();
});

test('refresh: an error frame emits "error" and is retried once, then the client stops trying', async () => {
  let n = 0;
  const { mesh, clock, last, of } = setup({ token: undefined, getToken: () => `tok${++n}`, heartbeat: 0, refreshRetry: 3000 });
  await flush();
  const ws = last();
  ws.serverOpen();
  ws.serverSend(welcome(clock, 's-1', 100));
  clock.advance(70e3); // 100 s: 30 s early
  await flush();
  assert.equal(refreshes(ws).length, 1);
  ws.serverSend({ type: 'error', op: 'refresh', reason: 'token is for another user' });
  const err = of('error').at(-1)[1];
  assert.ok(err instanceof Error);
  assert.deepEqual([err.op, err.reason, err.retry], ['refresh', 'token is for another user', true]);
  assert.equal(of('frame').length, 0, 'handled, not passed on as a frame');
  assert.equal(mesh.session.expires, nowSec(clock) + 30, 'nothing changed');
  clock.advance(2999);
  await flush();
  assert.equal(refreshes(ws).length, 1);
  clock.advance(1);
  await flush();
  assert.equal(refreshes(ws).length, 2, 'one retry');
  ws.serverSend({ type: 'error', op: 'refresh', reason: 'still not' });
  assert.equal(of('error').at(-1)[1].retry, false);
  assert.equal(of('error').length, 2);
  clock.advance(10 * 60 * 1000);
  await flush();
  assert.equal(refreshes(ws).length, 2, 'no third try: the 4001 at expiry reconnects instead');
  assert.equal(mesh.state, 'open');
  mesh.close();
});

test('refresh: a failing getToken and an unanswered refresh count as failures; a success resets them', async () => {
  let n = 0;
  const { mesh, clock, last, of } = setup({
    token: undefined,
    heartbeat: 0,
    heartbeatTimeout: 500,
    refreshRetry: 1000,
    getToken: () => {
      n++;
      if (n === 2) throw new Error('auth server down');
      return `tok${n}`;
    },
  });
  await flush();
  const ws = last();
  ws.serverOpen();
  ws.serverSend(welcome(clock, 's-1', 100));
  clock.advance(70e3);
  await flush();
  assert.equal(of('error').at(-1)[1].reason, 'getToken failed: auth server down');
  assert.equal(of('error').at(-1)[1].retry, true);
  assert.equal(refreshes(ws).length, 0);
  clock.advance(1000);
  await flush();
  assert.deepEqual(refreshes(ws).map((f) => f.token), ['tok3']);
  clock.advance(500); // no answer
  assert.deepEqual([of('error').at(-1)[1].reason, of('error').at(-1)[1].retry], ['no answer', false]);
  // A late answer still counts, and the schedule starts again.
  ws.serverSend({ type: 'refreshed', expires: nowSec(clock) + 100 });
  assert.equal(of('refreshed').length, 1);
  clock.advance(70e3);
  await flush();
  assert.deepEqual(refreshes(ws).map((f) => f.token), ['tok3', 'tok4']);
  mesh.close();
});

test('refresh: every timer goes with the socket; a token arriving late is not sent', async () => {
  let resolveToken = null;
  let n = 0;
  const { mesh, clock, sockets, last } = setup({
    token: undefined,
    heartbeat: 0,
    // The second call (the refresh) hangs until the test resolves it.
    getToken: () => (++n === 2 ? new Promise((r) => (resolveToken = r)) : `tok${n}`),
  });
  await flush();
  const ws = last();
  ws.serverOpen();
  ws.serverSend(welcome(clock, 's-1', 100));
  assert.ok('refresh' in mesh._timers, 'a refresh is scheduled');
  // Closed by the server while getToken is pending: only the reconnect timer is left.
  clock.advance(70e3);
  await flush();
  assert.equal(typeof resolveToken, 'function', 'getToken asked');
  ws.serverClose(1006);
  assert.deepEqual(Object.keys(mesh._timers), ['reconnect']);
  assert.equal(clock.pending(), 1);
  resolveToken('late');
  await flush();
  assert.equal(refreshes(ws).length, 0, 'not sent on the closed socket');
  // And close() with a refresh scheduled, or awaiting its answer, leaves nothing.
  clock.advance(mesh.options.backoff.max);
  await flush();
  assert.equal(sockets.length, 2);
  assert.equal(last().url, 'ws://n2/ws?token=tok3');
  const ws2 = last();
  ws2.serverOpen();
  ws2.serverSend(welcome(clock, 's-2', 100));
  clock.advance(70e3);
  await flush();
  assert.equal(refreshes(ws2).length, 1);
  assert.ok('refreshWait' in mesh._timers, 'awaiting the answer');
  mesh.close();
  assert.equal(clock.pending(), 0, 'close() clears the answer timer');
  clock.advance(10 * 60 * 1000);
  await flush();
  assert.equal(refreshes(ws2).length, 1);
  assert.equal(n, 4, 'getToken not asked after close()');
});

test('refresh: no getToken, no automatic refresh; refresh() sends the token from setToken', async () => {
  const { mesh, clock, last, of } = setup({ heartbeat: 0, stableAfter: 1000 });
  const ws = last();
  ws.serverOpen();
  ws.serverSend(welcome(clock, 's-1', 100));
  clock.advance(1000); // the stable timer
  assert.equal(clock.pending(), 0, 'nothing scheduled');
  mesh.setToken('T2');
  mesh.refresh();
  await flush();
  assert.deepEqual(refreshes(ws), [{ type: 'refresh', token: 'T2' }]);
  ws.serverSend({ type: 'refreshed', expires: nowSec(clock) + 3600 });
  assert.equal(of('refreshed').length, 1);
  assert.equal(mesh.session.expires, nowSec(clock) + 3600);
  assert.equal(clock.pending(), 0, 'still nothing scheduled without getToken');
  mesh.close();
});

test('refresh: option refresh false turns it off; refresh() before a welcome does nothing', async () => {
  const { mesh, clock, last } = setup({ token: undefined, getToken: () => 'tok', heartbeat: 0, refresh: false });
  await flush();
  const ws = last();
  ws.serverOpen();
  mesh.refresh();
  await flush();
  assert.equal(ws.sent.length, 0);
  ws.serverSend(welcome(clock, 's-1', 10));
  clock.advance(60e3);
  await flush();
  assert.equal(refreshes(ws).length, 0);
  mesh.close();
});

// Rooms.

// roomFrames returns the join and leave frames a socket sent, parsed.
function roomFrames(ws) {
  return ws.sent.map((d) => JSON.parse(d)).filter((f) => f.type === 'join' || f.type === 'leave');
}

// opened builds a client whose first socket is open with a session.
function opened(opts, urls) {
  const s = setup({ heartbeat: 0, ...opts }, urls);
  s.last().serverOpen();
  s.last().serverSend(welcome(s.clock, 's-1', 3600));
  return s;
}

// settled tells how a promise ended, after pending callbacks ran.
async function settled(p) {
  let out = ['pending'];
  p.then(
    (v) => (out = ['resolved', v]),
    (e) => (out = ['rejected', e])
  );
  await flush();
  return out;
}

test('rooms: join and leave send an id, resolve on joined/left, and keep mesh.rooms', async () => {
  const { mesh, last, of } = opened();
  const ws = last();
  const j1 = mesh.join('live:1');
  const j2 = mesh.join('news');
  const sent = roomFrames(ws);
  assert.deepEqual(sent.map((f) => [f.type, f.room]), [['join', 'live:1'], ['join', 'news']]);
  assert.equal(typeof sent[0].id, 'string');
  assert.notEqual(sent[0].id, sent[1].id, 'each request has its own id');
  assert.deepEqual(await settled(j1), ['pending'], 'nothing before the answer');
  assert.deepEqual([...mesh.rooms], [], 'mesh.rooms holds what the server confirmed only');
  ws.serverSend({ type: 'joined', room: 'live:1' });
  ws.serverSend({ type: 'joined', room: 'news' });
  assert.deepEqual(await settled(j1), ['resolved', 'live:1']);
  assert.deepEqual(await settled(j2), ['resolved', 'news']);
  assert.deepEqual([...mesh.rooms], ['live:1', 'news']);
  assert.deepEqual(of('joined').map((e) => e.slice(1)), [['live:1', { source: 'client' }], ['news', { source: 'client' }]]);
  mesh.rooms.clear(); // a copy: changing it changes nothing
  assert.equal(mesh.rooms.size, 2);

  const l = mesh.leave('live:1');
  assert.deepEqual(roomFrames(ws).at(-1).type, 'leave');
  ws.serverSend({ type: 'left', room: 'live:1' });
  assert.deepEqual(await settled(l), ['resolved', 'live:1']);
  assert.deepEqual([...mesh.rooms], ['news']);
  assert.deepEqual(of('left').map((e) => e.slice(1)), [['live:1', { source: 'client' }]]);
  assert.equal(of('frame').length, 0, 'joined and left are handled, not passed on');
  mesh.close();
});

test('rooms: an error frame for the request\'s id rejects it with the server\'s reason', async () => {
  const { mesh, last, of } = opened();
  const ws = last();
  const bad = mesh.join('sports');
  const ok = mesh.join('live:1');
  const [fBad, fOk] = roomFrames(ws);
  ws.serverSend({ type: 'error', op: 'join', id: fBad.id, reason: 'not allowed' });
  ws.serverSend({ type: 'joined', room: 'live:1' });
  const [how, err] = await settled(bad);
  assert.equal(how, 'rejected');
  assert.ok(err instanceof Error);
  assert.deepEqual([err.op, err.room, err.reason], ['join', 'sports', 'not allowed']);
  assert.match(err.message, /not allowed/);
  assert.deepEqual(await settled(ok), ['resolved', 'live:1']);
  assert.deepEqual([...mesh.rooms], ['live:1']);
  assert.equal(of('joined').length, 1);

  const full = mesh.join('live:2');
  ws.serverSend({ type: 'error', op: 'join', id: roomFrames(ws).at(-1).id, reason: 'too many rooms (max_per_session is 1)' });
  assert.match((await settled(full))[1].reason, /^too many rooms/);
  const l = mesh.leave('has space');
  ws.serverSend({ type: 'error', op: 'leave', id: roomFrames(ws).at(-1).id, reason: 'bad room name: byte 3 is 0x20' });
  assert.equal((await settled(l))[1].op, 'leave');
  // An error frame answering none of them is passed on as a frame.
  ws.serverSend({ type: 'error', op: 'join', id: 'not-ours', reason: 'x' });
  assert.equal(of('frame').length, 1);
  // Not a room name at all: rejected without asking the server.
  const sentBefore = ws.sent.length;
  assert.match((await settled(mesh.join('')))[1].reason, /^bad room name/);
  assert.match((await settled(mesh.join(42)))[1].reason, /^bad room name/);
  assert.equal(ws.sent.length, sentBefore);
  assert.deepEqual([...mesh.rooms], ['live:1']);
  mesh.close();
});

test('rooms: requests made without a session wait for the welcome', async () => {
  const { FakeWebSocket, sockets } = fakeSockets();
  const clock = new FakeClock(T0);
  const mesh = new WsMesh('ws://n1/ws', { token: 'T', WebSocket: FakeWebSocket, timers: clock, heartbeat: 0, autoConnect: false });
  const j = mesh.join('live:1'); // idle: connect() comes later
  mesh.connect();
  const ws = sockets[0];
  ws.serverOpen();
  assert.equal(roomFrames(ws).length, 0, 'not before the welcome');
  ws.serverSend(welcome(clock, 's-1', 3600));
  assert.deepEqual(roomFrames(ws).map((f) => [f.type, f.room]), [['join', 'live:1']]);
  ws.serverSend({ type: 'joined', room: 'live:1' });
  assert.deepEqual(await settled(j), ['resolved', 'live:1']);
  mesh.close();
});

test('rooms: the backend\'s joined and left change mesh.rooms too', async () => {
  const { mesh, last, of } = opened();
  const ws = last();
  ws.serverSend({ type: 'joined', room: 'notice:42' });
  assert.deepEqual([...mesh.rooms], ['notice:42']);
  assert.deepEqual(of('joined').at(-1).slice(1), ['notice:42', { source: 'backend' }]);
  ws.serverSend({ type: 'left', room: 'notice:42' });
  assert.deepEqual([...mesh.rooms], []);
  assert.deepEqual(of('left').at(-1).slice(1), ['notice:42', { source: 'backend' }]);
  // A left for a room the client is not in (the server answers those too) changes nothing.
  ws.serverSend({ type: 'left', room: 'never' });
  assert.deepEqual([...mesh.rooms], []);
  // Malformed: passed on as frames.
  ws.serverSend({ type: 'joined' });
  assert.equal(of('frame').length, 1);
  mesh.close();
});

test('rooms: messages carry frame.room; direct messages and broadcasts do not', () => {
  const { mesh, last } = opened();
  const got = [];
  mesh.onmessage = (data, id, frame) => got.push([data, id, frame.room]);
  last().serverSend({ type: 'message', id: 'm1', data: { text: 'hi' }, room: 'live:1' });
  last().serverSend({ type: 'message', id: 'm2', data: 'direct' });
  assert.deepEqual(got, [
    [{ text: 'hi' }, 'm1', 'live:1'],
    ['direct', 'm2', undefined],
  ]);
  mesh.close();
});

// joinAll joins rooms on ws and answers them.
async function joinAll(mesh, ws, rooms) {
  const ps = rooms.map((r) => mesh.join(r));
  for (const r of rooms) ws.serverSend({ type: 'joined', room: r });
  await Promise.all(ps);
}

for (const [name, code] of [['1012', CloseCode.SERVER_RESTART], ['1006', CloseCode.ABNORMAL], ['4001 token expired with getToken', CloseCode.UNAUTHORIZED]]) {
  test(`rooms: after a reconnect (${name}) the client's own rooms are joined again once the welcome arrives; the backend's are dropped`, async () => {
    const { mesh, clock, sockets, last, of } = setup({ token: undefined, getToken: () => 'tok', heartbeat: 0, random: () => 0 });
    await flush();
    const ws = last();
    ws.serverOpen();
    ws.serverSend(welcome(clock, 's-1', 3600));
    await joinAll(mesh, ws, ['live:1', 'news']);
    ws.serverSend({ type: 'joined', room: 'notice:42' }); // by the backend
    ws.serverSend({ type: 'joined', room: 'news' }); // the backend joins an own room: still own
    assert.deepEqual([...mesh.rooms], ['live:1', 'news', 'notice:42']);
    ws.serverClose(code, 'bye');
    assert.equal(mesh.state, 'reconnecting');
    assert.deepEqual([...mesh.rooms], ['live:1', 'news'], 'own rooms stay while reconnecting, the backend\'s go');
    assert.deepEqual(of('left').map((e) => e.slice(1)), [['notice:42', { source: 'reconnect' }]]);
    clock.advance(of('reconnect').at(-1)[1].delay);
    await flush();
    assert.equal(sockets.length, 2);
    const ws2 = last();
    ws2.serverOpen();
    assert.equal(roomFrames(ws2).length, 0, 'nothing before the welcome');
    const seen = [];
    mesh.on('welcome', () => seen.push(roomFrames(ws2).map((f) => f.room)));
    ws2.serverSend(welcome(clock, 's-2', 3600));
    assert.deepEqual(seen, [['live:1', 'news']], 'sent before the welcome event, in the order joined');
    assert.deepEqual(roomFrames(ws2).map((f) => f.type), ['join', 'join']);
    ws2.serverSend({ type: 'joined', room: 'live:1' });
    ws2.serverSend({ type: 'joined', room: 'news' });
    assert.deepEqual(of('joined').slice(-2).map((e) => e.slice(1)), [['live:1', { source: 'rejoin' }], ['news', { source: 'rejoin' }]]);
    assert.deepEqual([...mesh.rooms], ['live:1', 'news']);
    // A second reconnect re-joins them again: they are still the client's own.
    ws2.serverClose(1006);
    clock.advance(of('reconnect').at(-1)[1].delay);
    await flush();
    last().serverOpen();
    last().serverSend(welcome(clock, 's-3', 3600));
    assert.deepEqual(roomFrames(last()).map((f) => f.room), ['live:1', 'news']);
    mesh.close();
  });
}

test('rooms: a refused re-join drops the room; requests cut off by a drop are sent again; a leave while away wins over the re-join', async () => {
  const { mesh, clock, last, of } = opened({ random: () => 0 });
  const ws = last();
  await joinAll(mesh, ws, ['a', 'b', 'c']);
  const inFlight = mesh.join('d'); // the socket drops before the answer
  ws.serverClose(1006);
  const away = mesh.leave('c'); // no session: waits
  const later = mesh.join('e');
  clock.advance(of('reconnect').at(-1)[1].delay);
  const ws2 = last();
  ws2.serverOpen();
  ws2.serverSend(welcome(clock, 's-2', 3600));
  assert.deepEqual(roomFrames(ws2).map((f) => f.type + ' ' + f.room), ['join a', 'join b', 'join d', 'leave c', 'join e'], 're-joins first, then the app\'s requests in order; c is not re-joined');
  const ids = roomFrames(ws2).map((f) => f.id);
  assert.equal(new Set(ids).size, ids.length, 'fresh ids');
  ws2.serverSend({ type: 'joined', room: 'a' });
  ws2.serverSend({ type: 'error', op: 'join', id: ids[1], reason: 'not allowed' }); // b: the new token does not allow it
  ws2.serverSend({ type: 'joined', room: 'd' });
  ws2.serverSend({ type: 'left', room: 'c' });
  ws2.serverSend({ type: 'joined', room: 'e' });
  assert.deepEqual(of('left').map((e) => e.slice(1)), [
    ['b', { source: 'refused', reason: 'not allowed' }],
    ['c', { source: 'client' }],
  ]);
  assert.deepEqual(await settled(inFlight), ['resolved', 'd']);
  assert.deepEqual(await settled(away), ['resolved', 'c']);
  assert.deepEqual(await settled(later), ['resolved', 'e']);
  assert.deepEqual([...mesh.rooms], ['a', 'd', 'e']);
  assert.equal(of('error').length, 0);
  mesh.close();
});

test('rooms: a room the backend took the client out of is not re-joined', () => {
  const { mesh, clock, last, of } = opened({ random: () => 0 });
  const ws = last();
  mesh.join('a');
  mesh.join('b');
  ws.serverSend({ type: 'joined', room: 'a' });
  ws.serverSend({ type: 'joined', room: 'b' });
  ws.serverSend({ type: 'left', room: 'a' }); // POST /rooms/leave
  ws.serverClose(1012);
  clock.advance(of('reconnect').at(-1)[1].delay);
  last().serverOpen();
  last().serverSend(welcome(clock, 's-2', 3600));
  assert.deepEqual(roomFrames(last()).map((f) => f.room), ['b']);
  mesh.close();
});

for (const [name, stop, state] of [
  ['an evicted frame', (ws) => ws.serverSend({ type: 'evicted', reason: 'duplicate_login' }), 'evicted'],
  ['4000', (ws) => ws.serverClose(CloseCode.EVICTED, 'evicted by a newer login'), 'evicted'],
  ['4003', (ws) => ws.serverClose(CloseCode.KICKED, 'signed out'), 'kicked'],
  ['4001 at connect', (ws) => ws.serverClose(CloseCode.UNAUTHORIZED, 'token expired'), 'unauthorized'],
  ['close()', (ws, mesh) => mesh.close(), 'closed'],
]) {
  test(`rooms: after ${name} nothing is re-joined: mesh.rooms is cleared and waiting requests reject`, async () => {
    const { mesh, clock, sockets, last, of } = opened({ random: () => 0 });
    const ws = last();
    await joinAll(mesh, ws, ['live:1']);
    ws.serverSend({ type: 'joined', room: 'notice:42' });
    const waiting = mesh.join('live:2');
    stop(ws, mesh);
    if (state === 'evicted') ws.serverClose(CloseCode.EVICTED, 'evicted by a newer login');
    assert.equal(mesh.state, state);
    assert.deepEqual([...mesh.rooms], []);
    assert.deepEqual(of('left').map((e) => e.slice(1)), [['live:1', { source: state }], ['notice:42', { source: state }]]);
    const [how, err] = await settled(waiting);
    assert.deepEqual([how, err.op, err.room, err.reason], ['rejected', 'join', 'live:2', state]);
    const [how2, err2] = await settled(mesh.join('live:3'));
    assert.deepEqual([how2, err2.reason], ['rejected', 'not connected: ' + state], 'a stopped client refuses requests at once');
    clock.advance(10 * 60 * 1000);
    assert.equal(sockets.length, 1);
    // connect() on purpose: a new session in no room, nothing sent by itself.
    mesh.connect();
    last().serverOpen();
    last().serverSend(welcome(clock, 's-2', 3600));
    assert.deepEqual(roomFrames(last()), []);
    assert.deepEqual([...mesh.rooms], []);
    mesh.close();
  });
}

// messageFrames returns the message frames a socket sent, parsed.
function messageFrames(ws) {
  return ws.sent.map((d) => JSON.parse(d)).filter((f) => f.type === 'message');
}

// replies records the "reply" events of mesh.
function replies(mesh) {
  const got = [];
  mesh.on('reply', (data, id) => got.push([data, id]));
  return got;
}

test('send: a message frame with an id; resolves on its ack; a reply comes as the "reply" event', async () => {
  const { mesh, last, of } = opened();
  const ws = last();
  const got = replies(mesh);
  const p1 = mesh.send({ to: 'B', text: 'hi' });
  const p2 = mesh.send('second');
  const [f1, f2] = messageFrames(ws);
  assert.deepEqual(f1.data, { to: 'B', text: 'hi' });
  assert.equal(f2.data, 'second');
  assert.equal(typeof f1.id, 'string');
  assert.notEqual(f1.id, f2.id, 'each message has its own id');
  assert.deepEqual(await settled(p1), ['pending'], 'nothing before the ack');
  ws.serverSend({ type: 'ack', id: f1.id });
  assert.deepEqual(await settled(p1), ['resolved', undefined]);
  ws.serverSend({ type: 'reply', id: f1.id, data: { delivered: 1, offline: 0 } });
  assert.deepEqual(got, [[{ delivered: 1, offline: 0 }, f1.id]]);
  ws.serverSend({ type: 'ack', id: f2.id });
  assert.deepEqual(await settled(p2), ['resolved', undefined]);
  // An ack nobody waits for is passed on as a frame.
  ws.serverSend({ type: 'ack', id: f2.id });
  assert.equal(of('frame').length, 1);
  mesh.close();
});

test('send: with {reply: true} it resolves with the reply data, or undefined if none comes in time', async () => {
  const { mesh, clock, last } = opened();
  const ws = last();
  const got = replies(mesh);
  const p = mesh.send({ to: 'B', text: 'hi' }, { reply: true });
  const id = messageFrames(ws)[0].id;
  ws.serverSend({ type: 'ack', id });
  assert.deepEqual(await settled(p), ['pending'], 'the ack alone does not settle it');
  ws.serverSend({ type: 'reply', id, data: { delivered: 1, offline: 0 } });
  assert.deepEqual(await settled(p), ['resolved', { delivered: 1, offline: 0 }]);
  assert.equal(got.length, 0, 'the reply went to the Promise, not the event');

  const q = mesh.send('no reply expected', { reply: true });
  const qid = messageFrames(ws)[1].id;
  ws.serverSend({ type: 'ack', id: qid });
  clock.advance(defaults.heartbeatTimeout - 1);
  assert.deepEqual(await settled(q), ['pending']);
  clock.advance(1);
  assert.deepEqual(await settled(q), ['resolved', undefined]);
  ws.serverSend({ type: 'reply', id: qid, data: 'late' });
  assert.deepEqual(got, [['late', qid]], 'a late reply comes as the event');
  assert.equal(clock.pending(), 0, 'no timer left');
  mesh.close();
});

test('send: the node\'s error frame for the id rejects with its reason; bad data rejects at once', async () => {
  const { mesh, last, of } = opened();
  const ws = last();
  const p = mesh.send({ to: 'B' });
  const id = messageFrames(ws)[0].id;
  ws.serverSend({ type: 'error', op: 'message', id, reason: 'refused by the backend (403 Forbidden)' });
  const [how, err] = await settled(p);
  assert.equal(how, 'rejected');
  assert.ok(err instanceof Error);
  assert.deepEqual([err.op, err.id, err.reason, err.sent], ['message', id, 'refused by the backend (403 Forbidden)', true]);
  // One for no pending message is passed on.
  ws.serverSend({ type: 'error', op: 'message', id: 'not-ours', reason: 'x' });
  assert.equal(of('frame').length, 1);
  const sentBefore = ws.sent.length;
  for (const bad of [undefined, null]) {
    assert.match((await settled(mesh.send(bad)))[1].reason, /^no data/);
  }
  const cyclic = {};
  cyclic.self = cyclic;
  assert.match((await settled(mesh.send(cyclic)))[1].reason, /^data is not JSON/);
  assert.equal(ws.sent.length, sentBefore, 'nothing sent for bad data');
  mesh.close();
});

test('send: without a session it waits for the welcome; a drop before the ack rejects and is not sent again', async () => {
  const { mesh, clock, last, of } = setup({ heartbeat: 0, random: () => 0 });
  const early = mesh.send('early');
  last().serverOpen();
  assert.equal(messageFrames(last()).length, 0, 'not before the welcome');
  last().serverSend(welcome(clock, 's-1', 3600));
  const ws = last();
  assert.deepEqual(messageFrames(ws).map((f) => f.data), ['early']);
  const acked = mesh.send('acked, reply pending', { reply: true });
  ws.serverSend({ type: 'ack', id: messageFrames(ws)[1].id });
  ws.serverClose(1006);
  const [how, err] = await settled(early);
  assert.deepEqual([how, err.reason, err.sent], ['rejected', 'connection lost', true]);
  assert.deepEqual(await settled(acked), ['resolved', undefined], 'accepted: resolves without its reply');
  const away = mesh.send('while away');
  clock.advance(of('reconnect').at(-1)[1].delay);
  const ws2 = last();
  ws2.serverOpen();
  ws2.serverSend(welcome(clock, 's-2', 3600));
  assert.deepEqual(messageFrames(ws2).map((f) => f.data), ['while away'], 'only the one not sent before');
  ws2.serverSend({ type: 'ack', id: messageFrames(ws2)[0].id });
  assert.deepEqual(await settled(away), ['resolved', undefined]);
  mesh.close();
});

for (const [name, stop, state] of [
  ['an evicted frame', (ws) => ws.serverSend({ type: 'evicted', reason: 'duplicate_login' }), 'evicted'],
  ['4003', (ws) => ws.serverClose(CloseCode.KICKED, 'signed out'), 'kicked'],
  ['close()', (ws, mesh) => mesh.close(), 'closed'],
]) {
  test(`send: after ${name} waiting messages reject and new ones reject at once`, async () => {
    const { mesh, clock, last } = opened({ random: () => 0 });
    const ws = last();
    const inFlight = mesh.send('a');
    stop(ws, mesh);
    const [how, err] = await settled(inFlight);
    assert.deepEqual([how, err.reason, err.sent], ['rejected', state, true]);
    const [how2, err2] = await settled(mesh.send('b'));
    assert.deepEqual([how2, err2.reason, err2.sent], ['rejected', 'not connected: ' + state, false]);
    assert.equal(clock.pending(), 0);
    mesh.close();
  });
}
