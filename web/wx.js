// wx.js: WxWebSocket, the browser WebSocket interface that wsmesh.js uses,
// built on a mini-program SocketTask (wx.connectSocket). WeChat
// mini-programs have no WebSocket class; pass this one to WsMesh:
//
//   import { WsMesh } from './wsmesh.js';      // or 'wsmesh-client'
//   import { WxWebSocket } from './wx.js';     // or 'wsmesh-client/wx'
//   const mesh = new WsMesh('wss://push.example.com/ws', {
//     WebSocket: WxWebSocket.for(wx), // the platform's API object: wx, tt, qq, swan
//     getToken: () => fetchTokenFromYourBackend(), // a Promise of the JWT
//   });
//   mesh.on('message', (data, id) => console.log(id, data));
//   // App.onShow: if (mesh.state !== 'open') mesh.connect();  App.onHide: nothing to do
//
// The API object is a parameter, never looked up globally, so this module
// imports anywhere (Node tests included) and serves every platform with the
// same SocketTask API: WeChat wx, Douyin tt, QQ qq, Baidu swan, and uni-app's
// uni (given the fail callback this adapter always passes, uni.connectSocket
// returns the task rather than a Promise). With Taro, pass the platform's
// object (wx), not Taro: Taro.connectSocket returns a Promise.
//
// Alipay (my.connectSocket) differs: it returns a SocketTask only with
// multiple: true (otherwise nothing: its single-socket API is my.onSocketOpen
// and friends), its errors are {error, errorMessage} rather than {errMsg},
// and a binary frame comes as a base64 string flagged isBuffer. So:
//
//   WebSocket: WxWebSocket.for(my, { connect: { multiple: true } })
//
// (error messages are read from either shape; a frame with isBuffer is
// passed on as its base64 string, with event.isBuffer true: wsmesh nodes
// send only text frames.)
//
// The wss:// domain must be one of the mini-program's configured socket
// domains, served with a valid certificate. ES module syntax needs the
// developer tools' "ES6 to ES5" option (or a framework's bundler); the
// syntax is kept to ES2017, like wsmesh.js.
//
// Where a SocketTask and a browser WebSocket differ, this class behaves as
// the browser's does, since that is what wsmesh.js is written against:
//
//   - send() before the open event throws (InvalidStateError); after close()
//     or an error it does nothing. A SocketTask reports a failed send to its
//     fail callback, later: that fails the connection, as a browser does
//     when it cannot send, with an error event and close code 1006. (A send
//     that "succeeded" only means the task took the data.)
//   - close(code, reason) checks its arguments as the browser does (code
//     1000 or 3000-4999, reason at most 123 UTF-8 bytes) and passes them to
//     task.close. A SocketTask cannot close while connecting (its close
//     fails or is lost), so close() before the open event closes the task
//     at its open instead; the open event is not delivered.
//   - Every failure ends in one close event. If the task reports an error
//     and no close within closeTimeout ms (the platforms do not promise
//     one), or close() gets no close from the task in that time, the close
//     event comes with code 1006 (the error's message as the reason). A
//     close the task reports later is ignored, and so is anything after a
//     close event. An error followed by the task's close (the usual order)
//     passes on the task's code and reason, e.g. the server's 4001.
//   - The task's code and reason are passed on as they are: 1012, 4000,
//     4001, 4003, ... reach wsmesh.js unchanged (a missing code is 1006).
//     wasClean is false for 1006 and true otherwise. (WeChat has been seen
//     to report 1000 "interrupted" when it cuts the socket of a
//     mini-program in the background: an ordinary close, after which
//     wsmesh.js reconnects with backoff; connect() in App.onShow makes it
//     dial at once.)
//   - Events are plain objects ({type, target} plus data, code, reason,
//     wasClean, or message on an error), delivered to the onopen/onmessage/
//     onerror/onclose properties only (no addEventListener). The adapter's
//     own events (a failed connectSocket or send) are delivered after the
//     call that caused them returns, never from inside it. A handler that
//     throws does not stop the adapter: the error is rethrown from a timer.
//   - Binary frames arrive as ArrayBuffers (binaryType "arraybuffer").

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

// ABNORMAL is the code of a close that no close frame explains.
const ABNORMAL = 1006;

/** The defaults of WxWebSocket's options. */
export const wxDefaults = Object.freeze({
  closeTimeout: 2000,
});

export class WxWebSocket {
  /**
   * Opens a SocketTask to url with options.api.connectSocket.
   *
   * @param {string} url  a wss:// URL (ws:// only where the platform allows it)
   * @param {string|string[]} [protocols]  subprotocols (connectSocket's protocols)
   * @param {object} options
   * @param {object} options.api  the platform's API object: wx, tt, qq, swan,
   *        uni, or my (Alipay: with connect.multiple true)
   * @param {object} [options.connect]  more fields for connectSocket: header,
   *        timeout, tcpNoDelay, perMessageDeflate, multiple, ...
   * @param {number} [options.closeTimeout=2000]  ms to wait for the task's
   *        close after an error or close(), before reporting 1006 (see the
   *        file comment)
   * @param {{setTimeout: function, clearTimeout: function}} [options.timers]  for tests
   * @throws {TypeError} without an api, or if connectSocket returns no task;
   *         and whatever connectSocket throws
   */
  constructor(url, protocols, options) {
    const o = options || {};
    const api = o.api;
    if (!api || typeof api.connectSocket !== 'function') {
      throw new TypeError('WxWebSocket: options.api must be the mini-program API object (wx, my, tt, ...) with connectSocket');
    }
    /** The URL given to the constructor. */
    this.url = String(url);
    /** CONNECTING, OPEN, CLOSING or CLOSED, as in a browser. */
    this.readyState = CONNECTING;
    /** Always "arraybuffer": binary frames come as the task gives them. */
    this.binaryType = 'arraybuffer';
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
    this._closeTimeout = o.closeTimeout === undefined || o.closeTimeout === null ? wxDefaults.closeTimeout : o.closeTimeout;
    this._closeArgs = null; // close() before the open: what to close the task with at its open
    this._errored = false; // an error event went out
    this._timer = null; // the closeTimeout timer
    this._timers = o.timers || { setTimeout: (f, ms) => setTimeout(f, ms), clearTimeout: (t) => clearTimeout(t) };
    /** The SocketTask, for platform calls this class does not make. */
    this.task = null;

    const args = Object.assign({}, o.connect, {
      url: this.url,
      fail: (res) => this._fail(errorText(res, 'connectSocket failed')),
    });
    if (protocols !== undefined && protocols !== null) {
      args.protocols = typeof protocols === 'string' ? [protocols] : Array.prototype.slice.call(protocols);
    }
    const task = api.connectSocket(args);
    if (!task || typeof task.onOpen !== 'function') {
      this.readyState = CLOSED;
      throw new TypeError('WxWebSocket: connectSocket returned no SocketTask (Alipay needs connect: {multiple: true})');
    }
    this.task = task;
    if (this.readyState === CLOSED) this._closeTask({}, null); // connectSocket failed at once
    // Listen at once: a listener added later may miss the open.
    task.onOpen(() => this._opened());
    task.onMessage((res) => this._message(res));
    task.onClose((res) => this._closed(res));
    task.onError((res) => this._error(res));
  }

  /**
   * A WxWebSocket class bound to api (and options), for WsMesh's
   * options.WebSocket: its constructor takes (url, protocols) like the
   * browser's. See the constructor for the options.
   */
  static for(api, options) {
    const opts = Object.assign({}, options, { api });
    const Base = this;
    return class extends Base {
      constructor(url, protocols) {
        super(url, protocols, opts);
      }
    };
  }

  /**
   * Sends data (a string, an ArrayBuffer or a view of one; anything else is
   * sent as String(data)) with task.send. Throws an InvalidStateError before
   * the open event; does nothing once closing or closed. A send the task
   * fails later fails the connection (error, then close 1006).
   */
  send(data) {
    if (this.readyState === CONNECTING) {
      throw namedError('InvalidStateError', "Failed to execute 'send' on 'WebSocket': Still in CONNECTING state.");
    }
    if (this.readyState !== OPEN) return;
    let payload = data;
    if (ArrayBuffer.isView(data)) {
      payload = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    } else if (typeof data !== 'string' && !(data instanceof ArrayBuffer)) {
      payload = String(data);
    }
    try {
      this.task.send({ data: payload, fail: (res) => this._fail(errorText(res, 'send failed')) });
    } catch (err) {
      this._fail('send failed: ' + (err && err.message ? err.message : err));
    }
  }

  /**
   * Closes the connection with code (1000 or 3000-4999; the task's default,
   * 1000, if absent) and reason (at most 123 UTF-8 bytes), or throws as the
   * browser does (InvalidAccessError, SyntaxError). Before the open event
   * the task is closed at its open. The close event follows the task's
   * close, or comes with 1006 after closeTimeout ms. Safe to call twice: a
   * second call does nothing.
   */
  close(code, reason) {
    if (code !== undefined && !(code === 1000 || (code >= 3000 && code <= 4999))) {
      throw namedError('InvalidAccessError', "Failed to execute 'close' on 'WebSocket': The close code must be either 1000, or between 3000 and 4999. " + code + ' is neither.');
    }
    const why = reason === undefined ? undefined : String(reason);
    if (why !== undefined && utf8Length(why) > 123) {
      throw new SyntaxError("Failed to execute 'close' on 'WebSocket': The close reason must not be greater than 123 UTF-8 bytes.");
    }
    if (this.readyState === CLOSING || this.readyState === CLOSED) return;
    const args = {};
    if (code !== undefined) args.code = code;
    if (why !== undefined) args.reason = why;
    const wasOpen = this.readyState === OPEN;
    this.readyState = CLOSING;
    this._armCloseTimer('close timeout');
    if (wasOpen) {
      this._closeTask(args, (res) => this._fail(errorText(res, 'close failed')));
    } else {
      // A connecting task may not take a close: try, and again at its open.
      this._closeArgs = args;
      this._closeTask(args, null);
    }
  }

  _opened() {
    if (this.readyState === CONNECTING) {
      this.readyState = OPEN;
      this._dispatch('onopen', { type: 'open', target: this });
      return;
    }
    // close() came first, or the connection was given up on: close the
    // task now that it can be closed.
    this._closeTask(this._closeArgs || {}, null);
  }

  _message(res) {
    if (this.readyState !== OPEN && this.readyState !== CLOSING) return;
    const ev = { type: 'message', target: this, data: res ? res.data : undefined };
    if (res && res.isBuffer) ev.isBuffer = true; // Alipay: data is base64
    this._dispatch('onmessage', ev);
  }

  // _closed is the task's close.
  _closed(res) {
    if (this.readyState === CLOSED) return;
    const code = res && typeof res.code === 'number' ? res.code : ABNORMAL;
    const reason = res && typeof res.reason === 'string' ? res.reason : '';
    this._finish(code, reason);
  }

  // _error is the task's error: the connection is failing. The task's
  // close, with its code, should follow; closeTimeout bounds the wait.
  _error(res) {
    if (this.readyState === CLOSED) return;
    const message = errorText(res, 'socket error');
    this.readyState = CLOSING;
    this._armCloseTimer(message);
    if (!this._errored) {
      this._errored = true;
      this._dispatch('onerror', { type: 'error', target: this, message });
    }
  }

  // _fail fails the connection at once, for a failure of the adapter's own
  // calls (connectSocket, send, close): error and close 1006, after the
  // caller returns.
  _fail(message) {
    if (this.readyState === CLOSED) return;
    this._clearCloseTimer();
    this.readyState = CLOSED;
    this._closeTask(this._closeArgs || {}, null);
    const errored = this._errored;
    this._errored = true;
    Promise.resolve().then(() => {
      if (!errored) this._dispatch('onerror', { type: 'error', target: this, message });
      this._dispatch('onclose', { type: 'close', target: this, code: ABNORMAL, reason: message, wasClean: false });
    });
  }

  // _finish delivers the close event.
  _finish(code, reason) {
    this._clearCloseTimer();
    this.readyState = CLOSED;
    this._dispatch('onclose', { type: 'close', target: this, code, reason, wasClean: code !== ABNORMAL });
  }

  // _armCloseTimer gives the task closeTimeout ms to report its close;
  // then the connection is closed with 1006 and reason, and the task is
  // told to close (it may still hold one of the platform's few sockets).
  _armCloseTimer(reason) {
    if (this._timer !== null) return;
    this._timer = this._timers.setTimeout(() => {
      this._timer = null;
      if (this.readyState === CLOSED) return;
      this._closeTask(this._closeArgs || {}, null);
      this._finish(ABNORMAL, reason);
    }, this._closeTimeout);
  }

  _clearCloseTimer() {
    if (this._timer !== null) {
      this._timers.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  // _closeTask calls task.close with args; fail (may be null) gets its
  // failure. A throwing close counts as a failure.
  _closeTask(args, fail) {
    if (!this.task) return; // connectSocket has not returned
    const onFail = (res) => {
      if (fail) fail(res);
    };
    try {
      this.task.close(Object.assign({}, args, { fail: onFail }));
    } catch (err) {
      onFail({ errMsg: 'close: ' + (err && err.message ? err.message : err) });
    }
  }

  _dispatch(name, ev) {
    const fn = this[name];
    if (typeof fn !== 'function') return;
    try {
      fn.call(this, ev);
    } catch (err) {
      // Like a browser: report it without breaking the socket's callbacks.
      this._timers.setTimeout(() => {
        throw err;
      }, 0);
    }
  }
}

// The readyState constants, on the class and its instances, as in a browser.
for (const [name, value] of [['CONNECTING', CONNECTING], ['OPEN', OPEN], ['CLOSING', CLOSING], ['CLOSED', CLOSED]]) {
  Object.defineProperty(WxWebSocket, name, { value, enumerable: true });
  Object.defineProperty(WxWebSocket.prototype, name, { value, enumerable: true });
}

// errorText is the message of a platform's error result: WeChat's errMsg,
// Alipay's errorMessage (or error code).
function errorText(res, fallback) {
  if (res && typeof res.errMsg === 'string' && res.errMsg) return res.errMsg;
  if (res && typeof res.errorMessage === 'string' && res.errorMessage) return res.errorMessage;
  if (res && res.error !== undefined) return fallback + ': error ' + res.error;
  if (typeof res === 'string' && res) return res;
  return fallback;
}

function namedError(name, message) {
  const err = new Error(message);
  err.name = name;
  return err;
}

// utf8Length counts the UTF-8 bytes of s (no TextEncoder on every platform).
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      n += 1;
    } else if (c < 0x800) {
      n += 2;
    } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else {
      n += 3;
    }
  }
  return n;
}
