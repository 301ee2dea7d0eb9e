// wsmesh.js: a dependency-free client for a wsmesh cluster (see README.md,
// "WebSocket protocol"). It keeps one WebSocket to one of the given nodes:
//
//   import { WsMesh } from './wsmesh.js';
//   const mesh = new WsMesh(['wss://a.example/ws', 'wss://b.example/ws'], {
//     getToken: async () => (await fetch('/my-token')).text(), // or token: 'JWT'
//   });
//   mesh.onmessage = (data, id) => console.log(id, data);
//   mesh.on('state', (state) => console.log(state));
//   mesh.on('evicted', () => alert('signed in elsewhere'));
//   mesh.on('welcome', (s) => console.log('session', s.session, 'on', s.node));
//   await mesh.join('live:42'); // rejects with err.reason, e.g. "not allowed"
//   mesh.on('message', (data, id, frame) => { if (frame.room) showComment(frame.room, data); });
//   // later: mesh.close();
//
// What it does with the server's close codes:
//
//   1012 node shutting down  reconnect at once (up to restartJitter ms of jitter),
//                            to the next URL in the list
//   4000 evicted             a newer login of this user and device replaced this
//                            one: no reconnect; "evicted" event, state "evicted"
//   4001 unauthorized        the token was refused when connecting: no reconnect;
//                            "unauthorized" event, state "unauthorized". Get a
//                            new token and call connect() (with getToken,
//                            connect() asks it again)
//   4001 token expired       the same code after a welcome: the session's token
//        (in a session)      ran out. With getToken: reconnect with backoff, with
//                            a fresh token (a refused one then stops as above).
//                            Without: as above
//   4003 kicked              the backend closed this session (POST /disconnect):
//                            no reconnect; "kicked" event, state "kicked"
//   4002 slow consumer,      reconnect with jittered exponential backoff
//   4008 too many messages,
//   anything else            (1000 idle timeout, 1006 network, refused, ...)
//
// 4008 reconnects, with backoff: the server's limit is a token bucket
// (session.max_client_rate frames/s, burst twice that), so an over-limit
// burst is usually a moment's spike that a fresh connection does not repeat,
// and the user keeps getting pushes. A client that floods every time it
// connects does not stay open for stableAfter, so its delays keep growing
// up to backoff.max instead of hammering the cluster.
//
// Session and token refresh: the first frame of a connection is
// {"type":"welcome","session","node","user","device","expires"}; mesh.session
// holds those fields (null while there is no session) and a "welcome" event
// fires, once per connection (every reconnect is a new session id). With
// getToken, the client refreshes the token over the open socket before
// `expires` ({"type":"refresh","token"} answered by {"type":"refreshed",
// "expires"}), so a session outlives its token without reconnecting. It
// refreshes at 80% of the token's remaining lifetime, or 30 s
// (refreshMargin) before expiry if that is earlier, but never before half of
// the remaining lifetime:
//   - 80% leaves a margin that grows with the lifetime (12 min on a 1 h
//     token): room for a slow or briefly failing token endpoint, a retry,
//     and a client clock a few minutes slow (expires is the server's clock);
//   - 30 s keeps a usable margin on tokens of a few minutes, where 20% would
//     be a few seconds;
//   - half the lifetime bounds how often short tokens (under a minute) are
//     refreshed: never in a loop.
// A refused refresh (an error frame with op "refresh"), a failing getToken or
// no answer within heartbeatTimeout emits "error" and is retried once, with a
// new getToken token, after refreshRetry ms. If that fails too the client
// stops trying: the server closes the session at expiry with 4001 "token
// expired" and the client reconnects with a fresh token (see above).
// Without getToken nothing is refreshed by itself; refresh() sends the token
// given to setToken.
//
// Rooms: join(room) and leave(room) send {"type":"join"|"leave","room","id"}
// and return a Promise that resolves (with the room) on the server's
// {"type":"joined"|"left","room"} and rejects on {"type":"error","op":"join"
// |"leave","id"} (err.reason is the server's: "not allowed", "bad room name:
// ...", "too many rooms ..."). The answers carry no id: joined/left settle
// the oldest request sent for that room (the server answers in order), the
// error frame the request with its id. Without a session (before connect(),
// between a drop and the next welcome) a request waits and is sent after the
// next welcome; one in flight when the socket drops is sent again then (join
// and leave are idempotent). A request still waiting when the client stops
// (evicted, kicked, unauthorized, close()) rejects, and so does one made
// while it is stopped.
//
// mesh.rooms is the set of rooms the server confirmed: every joined frame
// adds its room, the ones the client asked for and the ones the backend put
// it in (POST /rooms/join) alike, and every left frame removes it. Each
// change fires "joined" or "left" (see the class comment).
//
// Re-join rules. Membership belongs to a connection: a new one starts in no
// room. After a reconnect the client joins again, once the new welcome
// arrives, every room it joined itself (with join()) and has not left; they
// stay in mesh.rooms meanwhile, and "joined" fires again with source
// "rejoin". A re-join the server refuses (the new token's rooms claim no
// longer allows it, too many rooms) drops the room: "left" with source
// "refused" and the server's reason. Rooms the backend joined the client to
// are not re-joined: they leave mesh.rooms when the socket drops ("left",
// source "reconnect") and the backend joins the new session again if it
// wants to (its upstream "connect" event says when). Why not re-join them
// too: the token's rooms claim is what the client may join by itself, and a
// backend join is the backend's decision beyond it. Re-joining would be
// refused ("not allowed") when the claim does not cover the room, and when
// it does, it would bring back a membership the backend may have ended
// while the client was away (a POST /rooms/leave then reached no session).
// A room both asked for by the client and joined by the backend counts as
// the client's; a backend "left" of any room ends it, re-join included.
// Nothing is re-joined after an eviction (4000), a kick (4003), a refused
// token (4001 with no reconnect) or close(): mesh.rooms is cleared ("left"
// with source "evicted", "kicked", "unauthorized" or "closed") and a later
// connect() starts in no room.
//
// Room messages come through the same "message" event as direct ones,
// message(data, id, frame), with frame.room set to the room; a direct
// message or a POST /broadcast has no frame.room. One event, not a second
// one for rooms: apps that already listen to "message" keep getting every
// message (the backend may put them in rooms), and nobody handles a room
// message twice. The third argument stays the frame, as it was.
//
// Messages to the backend: send(data) sends {"type":"message","id","data"};
// the node POSTs it to its upstream.url (README.md, "Upstream: events to
// your backend"). It returns a Promise that resolves once the backend took
// the message ({"type":"ack","id"}) and rejects with an Error (err.op
// "message", err.reason the node's) on {"type":"error","op":"message","id"}:
// the backend refused it (4xx) or was unreachable for upstream.retry_for,
// the node's queue was full, or the node has no backend. The backend may
// answer a message with data: {"type":"reply","id","data"}, right after the
// ack. send(data, {reply: true}) waits for it (up to heartbeatTimeout ms
// after the ack) and resolves with its data, or with undefined if none
// came; without it, the Promise resolves with undefined at the ack and
// the reply comes as the "reply" event. Sent at most once: a message made
// without a session waits for the next welcome, but one sent on a socket
// that drops before its ack rejects (reason "connection lost", err.sent
// true: the backend may or may not have it), and is not sent again.
//
// Every reconnect tries the next URL in the list (round robin), so a list of
// nodes, or one URL behind a load balancer, both work. Heartbeat: every
// `heartbeat` ms the client sends {"type":"ping"}; if no frame at all (pong or
// anything else) arrives within `heartbeatTimeout` ms after it, the socket is
// taken as dead: it is closed and a reconnect is scheduled with backoff. The
// backoff restarts from `backoff.min` once a connection has stayed open for
// `stableAfter` ms.
//
// It needs nothing but a WebSocket class with the browser's shape
// (constructor(url), onopen/onmessage/onclose/onerror, send, close,
// readyState) and setTimeout: no DOM, no EventTarget. It runs as is in
// browsers and Node 22+ (global WebSocket).
//
// WeChat mini-programs have no WebSocket class but wx.connectSocket: pass
// WxWebSocket.for(wx) from ./wx.js as options.WebSocket (see that file; the
// domain must be a configured wss:// socket domain of the mini-program):
//
//   import { WxWebSocket } from './wx.js';
//   const mesh = new WsMesh('wss://push.example.com/ws', { WebSocket: WxWebSocket.for(wx), getToken });
//   // App.onShow: if (mesh.state !== 'open') mesh.connect();  App.onHide: nothing to do
//
// Android (OkHttp) and other clients follow the same rules; this file is
// the reference for them.
//
// The syntax is kept to ES2017 (no ?., ??, class fields) so that old
// WebViews and the mini-program compiler take it unchanged.

/** Close codes the server sends (README.md, "Close codes"). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  ABNORMAL: 1006, // no close frame: network error, refused, or a dead heartbeat
  SERVER_RESTART: 1012,
  EVICTED: 4000,
  UNAUTHORIZED: 4001,
  SLOW_CONSUMER: 4002,
  KICKED: 4003, // disconnected by the backend (POST /disconnect)
  TOO_MANY_MESSAGES: 4008,
});

const OPEN = 1;

/** The defaults of every option; see the WsMesh constructor. */
export const defaults = Object.freeze({
  heartbeat: 25000,
  heartbeatTimeout: 10000,
  connectTimeout: 10000,
  restartJitter: 500,
  stableAfter: 10000,
  refreshMargin: 30000,
  refreshRetry: 5000,
  backoff: Object.freeze({ min: 500, max: 30000, factor: 2 }),
});

/**
 * The delay before reconnect number `attempt` (0 for the first): the
 * exponential base min*factor^attempt capped at max, with "equal jitter":
 * a uniformly random value in [base/2, base). `random` returns [0, 1).
 */
export function backoffDelay(attempt, backoff, random) {
  const b = Object.assign({}, defaults.backoff, backoff);
  const base = Math.min(b.max, b.min * Math.pow(b.factor, Math.max(0, attempt)));
  return Math.round(base / 2 + (random || Math.random)() * (base / 2));
}

// The longest delay setTimeout takes (about 24.8 days); longer ones fire at once.
const maxTimeout = 2147483647;
// The shortest wait before a refresh, whatever the clocks say.
const minRefreshDelay = 1000;

/**
 * How many ms from now to refresh a token with `remaining` ms left (see the
 * file comment): 80% of it, or `margin` ms before expiry if that is earlier,
 * but not before half of it; at least 1 s.
 */
export function refreshDelay(remaining, margin) {
  const m = margin === undefined ? defaults.refreshMargin : margin;
  const d = Math.max(remaining / 2, Math.min(remaining * 0.8, remaining - m));
  return Math.round(Math.max(minRefreshDelay, d));
}

/**
 * A connection to a wsmesh cluster that heals itself.
 *
 * States ("state" event, and .state): "idle" (before connect), "connecting",
 * "open", "reconnecting" (waiting for or dialing a reconnect), "evicted",
 * "unauthorized", "kicked", "closed" (after close()).
 *
 * Events, through mesh.on(type, fn) (returns a function that removes it) or
 * a property mesh['on' + type] = fn:
 *   message(data, id, frame)   a {"type":"message"} frame; frame.room is
 *                              the room of a room message (POST /publish),
 *                              absent for a direct message or a broadcast
 *   joined(room, {source})     the server confirmed the client is in room;
 *                              source: "client" (join()), "backend" (not
 *                              asked: POST /rooms/join), "rejoin" (joined
 *                              again after a reconnect)
 *   left(room, {source, reason?})   room left mesh.rooms (or a leave() was
 *                              answered); source: "client" (leave()),
 *                              "backend" (not asked: POST /rooms/leave),
 *                              "refused" (a re-join was refused: reason is
 *                              the server's), "reconnect" (a backend-joined
 *                              room, dropped with its connection), or why the
 *                              client stopped: "evicted", "kicked",
 *                              "unauthorized", "closed"
 *   open({url})                a socket opened; url is the node's URL (no token)
 *   close({code, reason, wasClean, reconnect, delay})
 *                              a socket closed (code 1006 for network errors,
 *                              refused connections and dead heartbeats);
 *                              reconnect tells whether a reconnect follows,
 *                              after delay ms
 *   state(state, previous)
 *   reconnect({attempt, delay, url})   a reconnect is scheduled
 *   welcome(session)           a {"type":"welcome"} frame: the connection's
 *                              session, also in mesh.session (below)
 *   refreshed({expires, session})   the server took a refreshed token;
 *                              expires is its exp (unix seconds), also
 *                              in mesh.session.expires
 *   evicted({reason})          a newer login replaced this one (4000)
 *   unauthorized({reason})     the token was refused (4001, and no reconnect)
 *   kicked({reason})           the backend closed this session (4003); the
 *                              reason is the backend's
 *   pong()                     the answer to a heartbeat ping
 *   reply(data, id, frame)     a {"type":"reply"} frame: the backend's
 *                              answer to the message send() sent as id,
 *                              unless send(data, {reply: true}) took it
 *   frame(frame)               any other frame, parsed
 *   error(err)                 getToken failed, the WebSocket constructor
 *                              threw, or a token refresh failed: then
 *                              err.op is "refresh", err.reason says why
 *                              (the server's reason, "no answer", or the
 *                              getToken error's message) and err.retry
 *                              whether one more try follows
 */
export class WsMesh {
  /**
   * @param {string|string[]} urls  ws:// or wss:// URLs of the nodes' /ws
   * @param {object} [options]
   * @param {string} [options.token]        the client JWT
   * @param {function(): (string|Promise<string>)} [options.getToken]
   *        asked before every connection and for every token refresh; wins
   *        over token
   * @param {number} [options.heartbeat=25000]  ms between pings; 0: none
   * @param {number} [options.heartbeatTimeout=10000]  ms to wait for any frame after a ping
   * @param {number} [options.connectTimeout=10000]  ms for a socket to open
   * @param {{min?: number, max?: number, factor?: number}} [options.backoff]
   *        reconnect delays: min 500, max 30000, factor 2
   * @param {number} [options.restartJitter=500]  most ms to wait before reconnecting after 1012
   * @param {number} [options.stableAfter=10000]  ms open after which backoff restarts from min
   * @param {boolean} [options.refresh=true]  refresh the token with getToken
   *        before the session's expires (needs getToken)
   * @param {number} [options.refreshMargin=30000]  refresh at least this many ms
   *        before expiry (within the bounds in the file comment)
   * @param {number} [options.refreshRetry=5000]  ms before the one retry of a
   *        failed refresh
   * @param {boolean} [options.autoConnect=true]  connect from the constructor
   * @param {function} [options.WebSocket]  the WebSocket class (default: the global one)
   * @param {{setTimeout: function, clearTimeout: function}} [options.timers]  for tests
   * @param {function(): number} [options.random]  Math.random by default; for tests
   * @param {function(): number} [options.now]  Date.now by default; for tests
   */
  constructor(urls, options) {
    const o = options || {};
    this.urls = (Array.isArray(urls) ? urls : [urls]).map(String);
    if (this.urls.length === 0) throw new TypeError('WsMesh: no URL');
    const pick = (v, d) => (v === undefined || v === null ? d : v);
    this.options = {
      token: o.token,
      getToken: o.getToken,
      heartbeat: pick(o.heartbeat, defaults.heartbeat),
      heartbeatTimeout: pick(o.heartbeatTimeout, defaults.heartbeatTimeout),
      connectTimeout: pick(o.connectTimeout, defaults.connectTimeout),
      restartJitter: pick(o.restartJitter, defaults.restartJitter),
      stableAfter: pick(o.stableAfter, defaults.stableAfter),
      refresh: o.refresh !== false,
      refreshMargin: pick(o.refreshMargin, defaults.refreshMargin),
      refreshRetry: pick(o.refreshRetry, defaults.refreshRetry),
      backoff: Object.assign({}, defaults.backoff, o.backoff),
      WebSocket: o.WebSocket || globalThis.WebSocket,
      timers: o.timers || { setTimeout: (f, ms) => setTimeout(f, ms), clearTimeout: (t) => clearTimeout(t) },
      random: o.random || Math.random,
      now: o.now || Date.now,
    };
    if (typeof this.options.WebSocket !== 'function') throw new TypeError('WsMesh: no WebSocket class; pass options.WebSocket');
    /** The current state; see the class comment. */
    this.state = 'idle';
    /** The URL (without token) of the socket being dialed or open, else null. */
    this.url = null;
    /** Consecutive reconnects since the last stable connection. */
    this.attempt = 0;
    /**
     * The current session, from its welcome frame: {session, node, user,
     * device, expires (unix seconds, updated by each refresh)}; null before
     * the welcome and once the socket has closed.
     */
    this.session = null;
    this._index = 0; // next URL to dial
    this._quick = 0; // 1012 reconnects without backoff since the last stable connection
    this._ws = null;
    this._gen = 0; // bumped by close() and each dial: stale callbacks check it
    this._timers = {};
    this._listeners = {};
    this._evictedSeen = false;
    this._refreshing = false; // a refresh is being sent or awaits its answer
    this._refreshFailures = 0; // failed refreshes since the last success or welcome
    this._rooms = new Map(); // room -> {own}: mesh.rooms; own: joined by join() (re-joined after a reconnect)
    this._requests = []; // join/leave requests without an answer, in the order sent (see _sendRequest)
    this._requestSeq = 0;
    this._messages = new Map(); // id -> send() waiting for its answer, in the order made (see send)
    if (o.autoConnect !== false) this.connect();
  }

  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    (this._listeners[type] = this._listeners[type] || []).push(fn);
    return () => this.off(type, fn);
  }

  /** Removes a listener added with on(). */
  off(type, fn) {
    const l = this._listeners[type];
    if (l) this._listeners[type] = l.filter((f) => f !== fn);
  }

  /**
   * Connects, unless a socket is open or being dialed. Call it after
   * "evicted", "kicked" or "unauthorized" (with a new token), or after close().
   */
  connect() {
    if (this.state === 'connecting' || this.state === 'open') return;
    this._clearTimer('reconnect');
    this.attempt = 0;
    this._quick = 0;
    this._dial('connecting');
  }

  /** Replaces the token used for the next connection. */
  setToken(token) {
    this.options.token = token;
  }

  /**
   * Refreshes the open session's token now, with getToken, or without it
   * with the token given to setToken (e.g. after a new login). The answer
   * comes as a "refreshed" or an "error" event. Does nothing without an open
   * session or while a refresh is under way.
   */
  refresh() {
    if (!this._ws || !this.session || this.state !== 'open' || this._refreshing) return;
    this._clearTimer('refresh');
    this._refreshFailures = 0;
    this._refresh();
  }

  /**
   * The rooms the client is in, as the server confirmed them, in the order
   * joined: a new Set each time (changing it changes nothing). Kept across
   * reconnects (see "Re-join rules" in the file comment), empty once the
   * client stopped.
   */
  get rooms() {
    return new Set(this._rooms.keys());
  }

  /**
   * Joins room. Returns a Promise that resolves with room once the server
   * answers joined, and rejects with an Error whose reason is the server's
   * (err.op "join", err.room) if it refuses. Without a session the request
   * waits for the next welcome; it rejects if the client stops first, or at
   * once if it is stopped (evicted, kicked, unauthorized, closed).
   */
  join(room) {
    return this._roomRequest('join', room);
  }

  /**
   * Leaves room: like join(), settled by the server's left (also answered
   * for a room the client is not in). The room is not re-joined after a
   * reconnect, even if the answer comes only after it.
   */
  leave(room) {
    return this._roomRequest('leave', room);
  }

  _roomRequest(op, room) {
    if (typeof room !== 'string' || room === '') {
      return Promise.reject(roomError(op, room, 'bad room name: ' + (typeof room === 'string' ? 'empty' : 'not a string')));
    }
    if (stopped(this.state)) return Promise.reject(roomError(op, room, 'not connected: ' + this.state));
    return new Promise((resolve, reject) => {
      const req = { id: op + '-' + ++this._requestSeq, op, room, source: 'client', resolve, reject, sent: false };
      this._requests.push(req);
      if (this.session) this._sendRequest(req);
    });
  }

  // _sendRequest sends req on the open session's socket, if there is one;
  // else, or if the send fails (a close event follows), it waits for the
  // next welcome (_rejoin).
  _sendRequest(req) {
    const ws = this._ws;
    if (!ws || !this.session) return;
    try {
      ws.send(JSON.stringify({ type: req.op, room: req.room, id: req.id }));
      req.sent = true;
    } catch (err) {
      // sent after the next welcome
    }
  }

  // _takeRequest removes and returns the oldest sent request that match
  // accepts, or null.
  _takeRequest(match) {
    const i = this._requests.findIndex((r) => r.sent && match(r));
    return i < 0 ? null : this._requests.splice(i, 1)[0];
  }

  _joined(room) {
    const req = this._takeRequest((r) => r.op === 'join' && r.room === room);
    const source = req ? req.source : 'backend';
    const had = this._rooms.get(room);
    this._rooms.set(room, { own: source !== 'backend' || !!(had && had.own) });
    if (req && req.resolve) req.resolve(room);
    this._emit('joined', room, { source });
  }

  _left(room) {
    const req = this._takeRequest((r) => r.op === 'leave' && r.room === room);
    this._rooms.delete(room);
    if (req) req.resolve(room);
    this._emit('left', room, { source: req ? 'client' : 'backend' });
  }

  // _roomRefused settles the request an error frame answers; false if
  // it answers none of them.
  _roomRefused(f) {
    const req = typeof f.id === 'string' ? this._takeRequest((r) => r.id === f.id && r.op === f.op) : null;
    if (!req) return false;
    const reason = typeof f.reason === 'string' && f.reason ? f.reason : 'refused';
    if (req.source === 'rejoin') {
      if (this._rooms.delete(req.room)) this._emit('left', req.room, { source: 'refused', reason });
    } else {
      req.reject(roomError(req.op, req.room, reason));
    }
    return true;
  }

  /**
   * Sends data (any JSON value but null) to the backend as
   * {"type":"message","id","data"}. Returns a Promise that resolves once
   * the backend accepted it ({"type":"ack"}): with undefined, or, with
   * options.reply, with the data of the backend's reply if one comes within
   * heartbeatTimeout ms of the ack (undefined if none). It rejects with an
   * Error (err.op "message", err.id, err.reason) on the node's error frame
   * for it (the backend refused it or was unreachable, the queue was full,
   * no backend), if the socket drops before the ack (reason "connection
   * lost", err.sent true: the backend may have it), or if the client stops.
   * Without a session it waits for the next welcome; it rejects at once if
   * the client is stopped or data is null, undefined or not JSON.
   * @param {*} data
   * @param {{reply?: boolean}} [options]
   */
  send(data, options) {
    const id = 'msg-' + ++this._requestSeq;
    let text;
    try {
      text = data === undefined || data === null ? undefined : JSON.stringify({ type: 'message', id, data });
    } catch (err) {
      return Promise.reject(messageError(id, 'data is not JSON: ' + (err && err.message ? err.message : err), false));
    }
    if (text === undefined) return Promise.reject(messageError(id, 'no data: a message needs data, any JSON value but null', false));
    if (stopped(this.state)) return Promise.reject(messageError(id, 'not connected: ' + this.state, false));
    return new Promise((resolve, reject) => {
      const m = { id, text, wantReply: !!(options && options.reply), resolve, reject, sent: false, acked: false };
      this._messages.set(id, m);
      if (this.session) this._sendMessage(m);
    });
  }

  // _sendMessage sends m on the open session's socket, if there is one;
  // else, or if the send throws (a close event follows), it waits for the
  // next welcome.
  _sendMessage(m) {
    const ws = this._ws;
    if (!ws || !this.session) return;
    try {
      ws.send(m.text);
      m.sent = true;
    } catch (err) {
      // sent after the next welcome
    }
  }

  // _acked settles the send() an ack answers; false if it answers none.
  _acked(f) {
    const m = typeof f.id === 'string' ? this._messages.get(f.id) : undefined;
    if (!m || !m.sent || m.acked) return false;
    if (!m.wantReply) {
      this._messages.delete(m.id);
      m.resolve(undefined);
      return true;
    }
    m.acked = true;
    this._setTimer('reply:' + m.id, this.options.heartbeatTimeout, () => {
      this._messages.delete(m.id);
      m.resolve(undefined);
    });
    return true;
  }

  // _replied hands a reply to the send() waiting for it, else to the
  // "reply" event.
  _replied(f) {
    const m = typeof f.id === 'string' ? this._messages.get(f.id) : undefined;
    if (m && m.acked) {
      this._clearTimer('reply:' + m.id);
      this._messages.delete(m.id);
      m.resolve(f.data);
      return;
    }
    this._emit('reply', f.data, f.id, f);
  }

  // _messageRefused rejects the send() an error frame answers; false if it
  // answers none.
  _messageRefused(f) {
    const m = typeof f.id === 'string' ? this._messages.get(f.id) : undefined;
    if (!m || !m.sent || m.acked) return false;
    this._messages.delete(m.id);
    m.reject(messageError(m.id, typeof f.reason === 'string' && f.reason ? f.reason : 'refused', true));
    return true;
  }

  // _messagesAfterClose settles the send()s a socket's end cuts off. stop:
  // why the client stopped: all of them reject. Else (a reconnect follows)
  // those sent reject, unless acked (they resolve without a reply), and
  // those not sent yet wait for the next welcome.
  _messagesAfterClose(stop) {
    for (const m of Array.from(this._messages.values())) {
      if (m.acked) {
        this._clearTimer('reply:' + m.id);
        m.resolve(undefined);
      } else if (stop || m.sent) {
        m.reject(messageError(m.id, stop || 'connection lost', m.sent));
      } else {
        continue;
      }
      this._messages.delete(m.id);
    }
  }

  // _rejoin runs at a welcome: it joins again the rooms the client joined
  // itself, then sends the app's waiting requests in the order made. A
  // room with a request of the app waiting is left to that request.
  _rejoin() {
    const waiting = new Set(this._requests.map((r) => r.room));
    const rejoins = [];
    for (const [room, m] of this._rooms) {
      if (m.own && !waiting.has(room)) rejoins.push({ id: 'join-' + ++this._requestSeq, op: 'join', room, source: 'rejoin', sent: false });
    }
    this._requests = rejoins.concat(this._requests);
    for (const req of this._requests.slice()) {
      if (!req.sent) this._sendRequest(req);
    }
  }

  // _roomsAfterClose updates rooms and requests when a socket has gone.
  // stop: why the client stopped ("evicted", "kicked", "unauthorized",
  // "closed"): every room is dropped and every request rejects. Else a
  // reconnect follows: backend-joined rooms are dropped, re-joins are
  // forgotten (the next welcome makes them again) and the app's requests
  // wait for the next welcome.
  _roomsAfterClose(stop) {
    if (stop) {
      const reqs = this._requests;
      this._requests = [];
      for (const req of reqs) {
        if (req.reject) req.reject(roomError(req.op, req.room, stop));
      }
    } else {
      this._requests = this._requests.filter((r) => r.source !== 'rejoin');
      for (const req of this._requests) req.sent = false;
    }
    for (const [room, m] of Array.from(this._rooms)) {
      if (stop || !m.own) {
        this._rooms.delete(room);
        this._emit('left', room, { source: stop || 'reconnect' });
      }
    }
  }

  /** Closes the socket with 1000 and stops every timer; no reconnect. */
  close() {
    this._gen++;
    this._clearAllTimers();
    const ws = this._ws;
    this._ws = null;
    this.url = null;
    this.session = null;
    this._refreshing = false;
    if (ws) {
      detach(ws);
      try {
        ws.close(CloseCode.NORMAL, 'client closed');
      } catch (e) {
        // already closed
      }
    }
    this._setState('closed');
    this._roomsAfterClose('closed');
    this._messagesAfterClose('closed');
  }

  _emit(type) {
    const args = Array.prototype.slice.call(arguments, 1);
    const fns = (this._listeners[type] || []).slice();
    const prop = this['on' + type];
    if (typeof prop === 'function') fns.unshift(prop);
    for (const fn of fns) {
      try {
        fn.apply(this, args);
      } catch (err) {
        // A listener's bug must not stop the reconnect logic: report it
        // the way an uncaught error would be.
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }

  _setState(s) {
    if (this.state === s) return;
    const prev = this.state;
    this.state = s;
    this._emit('state', s, prev);
  }

  _setTimer(name, ms, fn) {
    this._clearTimer(name);
    const t = this.options.timers;
    this._timers[name] = t.setTimeout(() => {
      delete this._timers[name];
      fn();
    }, ms);
  }

  _clearTimer(name) {
    if (name in this._timers) {
      this.options.timers.clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  }

  _clearAllTimers() {
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
  }

  // _dial gets a token and opens a socket to urls[_index].
  _dial(state) {
    const gen = ++this._gen;
    this._clearAllTimers();
    const old = this._ws; // e.g. an evicted socket whose close has not come yet
    this._ws = null;
    if (old) {
      detach(old);
      try {
        old.close(CloseCode.NORMAL, 'reconnecting');
      } catch (err) {
        // already closed
      }
    }
    this._evictedSeen = false;
    this.session = null;
    this._refreshing = false;
    this.url = this.urls[this._index % this.urls.length];
    this._setState(state);
    const getToken = this.options.getToken;
    if (!getToken) {
      this._open(gen, this.options.token);
      return;
    }
    let p;
    try {
      p = Promise.resolve(getToken());
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (token) => {
        if (gen === this._gen) this._open(gen, token);
      },
      (err) => {
        if (gen !== this._gen) return;
        this._emit('error', err);
        this._closed(CloseCode.ABNORMAL, 'getToken failed: ' + (err && err.message ? err.message : err), false, false);
      }
    );
  }

  _open(gen, token) {
    const url = this.url;
    const full = token === undefined || token === null || token === '' ? url : url + (url.indexOf('?') >= 0 ? '&' : '?') + 'token=' + encodeURIComponent(token);
    let ws;
    try {
      ws = new this.options.WebSocket(full);
    } catch (err) {
      this._emit('error', err);
      this._closed(CloseCode.ABNORMAL, 'cannot create WebSocket: ' + (err && err.message ? err.message : err), false, false);
      return;
    }
    this._ws = ws;
    let opened = false;
    this._setTimer('connect', this.options.connectTimeout, () => this._drop(ws, 'connect timeout', false));
    ws.onopen = () => {
      if (gen !== this._gen) return;
      opened = true;
      this._clearTimer('connect');
      this._setState('open');
      this._emit('open', { url });
      this._setTimer('stable', this.options.stableAfter, () => {
        this.attempt = 0;
        this._quick = 0;
      });
      this._schedulePing(ws);
    };
    ws.onmessage = (e) => {
      if (gen !== this._gen) return;
      this._clearTimer('deadline'); // any frame proves the connection alive
      if (typeof e.data !== 'string') return;
      let f;
      try {
        f = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      if (!f || typeof f !== 'object') return;
      switch (f.type) {
        case 'message':
          this._emit('message', f.data, f.id, f);
          break;
        case 'pong':
          this._emit('pong');
          break;
        case 'welcome':
          this._welcome(f);
          break;
        case 'refreshed':
          this._refreshed(f);
          break;
        case 'joined':
        case 'left':
          if (typeof f.room !== 'string') {
            this._emit('frame', f);
          } else if (f.type === 'joined') {
            this._joined(f.room);
          } else {
            this._left(f.room);
          }
          break;
        case 'error':
          if (f.op === 'refresh' && this._refreshing) {
            this._refreshFailed(gen, f.reason || 'refused');
          } else if (!((f.op === 'join' || f.op === 'leave') && this._roomRefused(f)) && !(f.op === 'message' && this._messageRefused(f))) {
            this._emit('frame', f);
          }
          break;
        case 'ack':
          if (!this._acked(f)) this._emit('frame', f);
          break;
        case 'reply':
          this._replied(f);
          break;
        case 'evicted':
          this._evicted(f.reason || 'evicted');
          break;
        default:
          this._emit('frame', f);
      }
    };
    ws.onerror = () => {}; // a close event follows, with the code
    ws.onclose = (e) => {
      if (gen !== this._gen) return;
      this._ws = null;
      this._closed(e.code || CloseCode.ABNORMAL, e.reason || '', !!e.wasClean, opened);
    };
  }

  _schedulePing(ws) {
    const hb = this.options.heartbeat;
    if (!(hb > 0)) return;
    this._setTimer('ping', hb, () => {
      if (ws !== this._ws || ws.readyState !== OPEN) return;
      try {
        ws.send('{"type":"ping"}');
      } catch (err) {
        // the close event will tell
      }
      if (!('deadline' in this._timers)) {
        this._setTimer('deadline', this.options.heartbeatTimeout, () => this._drop(ws, 'heartbeat timeout', true));
      }
      this._schedulePing(ws);
    });
  }

  _welcome(f) {
    this.session = {
      session: f.session,
      node: f.node,
      user: f.user,
      device: f.device,
      expires: typeof f.expires === 'number' ? f.expires : null,
    };
    this._refreshing = false;
    this._refreshFailures = 0;
    this._clearTimer('refreshWait');
    this._scheduleRefresh();
    this._rejoin(); // before the event: a listener's join() goes out after the re-joins
    for (const m of Array.from(this._messages.values())) {
      if (!m.sent) this._sendMessage(m);
    }
    this._emit('welcome', this.session);
  }

  _refreshed(f) {
    this._clearTimer('refreshWait');
    this._refreshing = false;
    this._refreshFailures = 0;
    if (!this.session) return; // a stray answer before any welcome: nothing to update
    if (typeof f.expires === 'number') this.session.expires = f.expires;
    this._scheduleRefresh();
    this._emit('refreshed', { expires: this.session.expires, session: this.session.session });
  }

  // _scheduleRefresh sets the "refresh" timer from session.expires (see
  // refreshDelay), if this client can get tokens to refresh with.
  _scheduleRefresh() {
    this._clearTimer('refresh');
    const s = this.session;
    if (!s || s.expires === null || !this.options.refresh || !this.options.getToken) return;
    const now = this.options.now();
    const due = now + refreshDelay(s.expires * 1000 - now, this.options.refreshMargin);
    const arm = () => {
      const delay = due - this.options.now();
      if (delay > maxTimeout) {
        // Beyond setTimeout's range: wake up at its end and wait the rest.
        this._setTimer('refresh', maxTimeout, arm);
        return;
      }
      this._setTimer('refresh', Math.max(0, delay), () => this._refresh());
    };
    arm();
  }

  // _refresh gets a token and sends it as {"type":"refresh"} on the open
  // socket; "refreshWait" bounds the wait for its answer.
  _refresh() {
    const ws = this._ws;
    if (!ws || !this.session || this.state !== 'open' || this._refreshing) return;
    const gen = this._gen;
    this._refreshing = true;
    const getToken = this.options.getToken;
    let p;
    try {
      p = Promise.resolve(getToken ? getToken() : this.options.token);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (token) => {
        if (gen !== this._gen || ws !== this._ws) return; // that socket is gone
        if (typeof token !== 'string' || token === '') {
          this._refreshFailed(gen, 'no token to refresh with');
          return;
        }
        try {
          ws.send(JSON.stringify({ type: 'refresh', token }));
        } catch (err) {
          this._refreshFailed(gen, 'send: ' + (err && err.message ? err.message : err));
          return;
        }
        this._setTimer('refreshWait', this.options.heartbeatTimeout, () => this._refreshFailed(gen, 'no answer'));
      },
      (err) => {
        if (gen !== this._gen || ws !== this._ws) return;
        this._refreshFailed(gen, 'getToken failed: ' + (err && err.message ? err.message : err));
      }
    );
  }

  // _refreshFailed reports a failed refresh and retries it once.
  _refreshFailed(gen, reason) {
    if (gen !== this._gen) return;
    this._clearTimer('refreshWait');
    this._refreshing = false;
    this._refreshFailures++;
    // A retry asks getToken again; the same token from setToken would only
    // be refused again.
    const retry = this._refreshFailures < 2 && !!this.options.getToken;
    const err = new Error('token refresh failed: ' + reason);
    err.op = 'refresh';
    err.reason = reason;
    err.retry = retry;
    if (retry) this._setTimer('refresh', this.options.refreshRetry, () => this._refresh());
    this._emit('error', err);
  }

  // _drop gives up on a socket that did not open in time or whose
  // heartbeat went unanswered: it may never report its close, so close it
  // without listening and carry on as if it had closed with 1006.
  _drop(ws, reason, opened) {
    if (ws !== this._ws) return;
    this._gen++;
    this._ws = null;
    detach(ws);
    try {
      ws.close(CloseCode.NORMAL, reason);
    } catch (err) {
      // not open yet in some implementations: nothing to do
    }
    this._closed(CloseCode.ABNORMAL, reason, false, opened);
  }

  _evicted(reason) {
    if (this._evictedSeen) return;
    this._evictedSeen = true;
    this._clearAllTimers(); // no heartbeat deadline on a socket being evicted
    this._setState('evicted');
    this._roomsAfterClose('evicted'); // the server took the session out of its rooms
    this._messagesAfterClose('evicted');
    this._emit('evicted', { reason });
  }

  // _closed decides what follows the end of a socket.
  _closed(code, reason, wasClean, opened) {
    for (const name of ['connect', 'ping', 'deadline', 'stable', 'refresh', 'refreshWait']) this._clearTimer(name);
    const hadSession = this.session !== null;
    this.session = null;
    this._refreshing = false;
    if (code === CloseCode.EVICTED || this._evictedSeen) {
      this.url = null;
      this._evicted(reason || 'evicted');
      this._emit('close', { code, reason, wasClean, reconnect: false, delay: 0 });
      return;
    }
    if (code === CloseCode.KICKED) {
      this.url = null;
      this._setState('kicked');
      this._roomsAfterClose('kicked');
      this._messagesAfterClose('kicked');
      this._emit('kicked', { reason });
      this._emit('close', { code, reason, wasClean, reconnect: false, delay: 0 });
      return;
    }
    // 4001 after a welcome is a token that ran out during the session (the
    // server refuses a token at the start without one): a fresh token from
    // getToken may connect again. If the server refuses that one too, it
    // comes without a welcome and the client stops here.
    if (code === CloseCode.UNAUTHORIZED && !(hadSession && this.options.getToken)) {
      this.url = null;
      this._setState('unauthorized');
      this._roomsAfterClose('unauthorized');
      this._messagesAfterClose('unauthorized');
      this._emit('unauthorized', { reason });
      this._emit('close', { code, reason, wasClean, reconnect: false, delay: 0 });
      return;
    }
    let delay;
    if (code === CloseCode.SERVER_RESTART && opened && this._quick < Math.max(2, this.urls.length)) {
      // The node is going away on purpose: another one is up. Bounded, so
      // a whole cluster restarting does not make this spin.
      this._quick++;
      delay = Math.round(this.options.random() * this.options.restartJitter);
    } else {
      delay = backoffDelay(this.attempt, this.options.backoff, this.options.random);
      this.attempt++;
    }
    this._index = (this._index + 1) % this.urls.length;
    const next = this.urls[this._index];
    this._setState('reconnecting');
    this._roomsAfterClose(null);
    this._messagesAfterClose(null);
    this._emit('close', { code, reason, wasClean, reconnect: true, delay });
    this._emit('reconnect', { attempt: this.attempt, delay, url: next });
    this._setTimer('reconnect', delay, () => this._dial('reconnecting'));
  }
}

// stopped tells whether the client stays down until connect().
function stopped(state) {
  return state === 'closed' || state === 'evicted' || state === 'kicked' || state === 'unauthorized';
}

// roomError is what a join or leave rejects with.
function roomError(op, room, reason) {
  const err = new Error(op + ' ' + JSON.stringify(room) + ': ' + reason);
  err.op = op;
  err.room = room;
  err.reason = reason;
  return err;
}

// messageError is what a send() rejects with; sent tells whether the
// message went out (the backend may have it).
function messageError(id, reason, sent) {
  const err = new Error('message ' + id + ': ' + reason);
  err.op = 'message';
  err.id = id;
  err.reason = reason;
  err.sent = sent;
  return err;
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
}
