// Type declarations of wx.js: WxWebSocket, a browser-shaped WebSocket on a
// mini-program SocketTask, for WsMesh's WebSocket option. See wx.js's
// comment for how it maps the two.

/** An error or failure result: WeChat's errMsg, Alipay's error and errorMessage. */
export interface SocketFailResult {
  errMsg?: string;
  errorMessage?: string;
  error?: unknown;
}

/** The SocketTask methods WxWebSocket calls (wx.connectSocket's return). */
export interface SocketTask {
  onOpen(listener: (result: any) => void): void;
  onMessage(listener: (result: { data: string | ArrayBuffer; isBuffer?: boolean }) => void): void;
  onClose(listener: (result: { code?: number; reason?: string }) => void): void;
  onError(listener: (result: SocketFailResult) => void): void;
  send(option: { data: string | ArrayBuffer; fail?: (result: SocketFailResult) => void }): void;
  close(option: { code?: number; reason?: string; fail?: (result: SocketFailResult) => void }): void;
}

/** What WxWebSocket passes to connectSocket: url, protocols, fail, and options.connect's fields. */
export interface ConnectSocketOptions {
  url: string;
  protocols?: string[];
  fail?: (result: SocketFailResult) => void;
  [field: string]: unknown;
}

/** A platform API object with connectSocket: wx, tt, qq, swan, uni, or my (Alipay). */
export interface MiniProgramApi {
  connectSocket(options: ConnectSocketOptions): SocketTask | void;
}

export interface WxWebSocketOptions {
  /** Extra connectSocket fields: header, timeout, tcpNoDelay, perMessageDeflate, multiple (Alipay: true), ... */
  connect?: Record<string, unknown>;
  /** ms to wait for the task's close after an error or close() before reporting 1006. Default 2000. */
  closeTimeout?: number;
  /** For tests. */
  timers?: { setTimeout(fn: () => void, ms: number): unknown; clearTimeout(handle: any): void };
}

/** The defaults of WxWebSocketOptions. */
export declare const wxDefaults: Readonly<{ closeTimeout: number }>;

export interface WxOpenEvent {
  type: 'open';
  target: WxWebSocket;
}
export interface WxMessageEvent {
  type: 'message';
  target: WxWebSocket;
  /** A string for text frames; an ArrayBuffer for binary ones (Alipay: a base64 string, isBuffer true). */
  data: string | ArrayBuffer;
  isBuffer?: boolean;
}
export interface WxErrorEvent {
  type: 'error';
  target: WxWebSocket;
  /** The platform's errMsg (or errorMessage). */
  message: string;
}
export interface WxCloseEvent {
  type: 'close';
  target: WxWebSocket;
  /** The task's code (1006 if it gave none, or the adapter gave up waiting). */
  code: number;
  reason: string;
  /** False for 1006. */
  wasClean: boolean;
}

/** A WxWebSocket class bound to an API object: new (url, protocols?). */
export interface WxWebSocketClass {
  new (url: string, protocols?: string | string[]): WxWebSocket;
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSING: 2;
  readonly CLOSED: 3;
}

/** The browser WebSocket interface WsMesh uses, on a mini-program SocketTask. */
export declare class WxWebSocket {
  /**
   * Calls options.api.connectSocket({url, protocols, fail, ...options.connect}).
   * @throws TypeError without options.api, or if connectSocket returns no task
   */
  constructor(url: string, protocols: string | string[] | undefined, options: WxWebSocketOptions & { api: MiniProgramApi });

  /** A class whose constructor takes (url, protocols), bound to api: for WsMesh's WebSocket option. */
  static for(api: MiniProgramApi, options?: WxWebSocketOptions): WxWebSocketClass;

  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSING: 2;
  static readonly CLOSED: 3;
  readonly CONNECTING: 0;
  readonly OPEN: 1;
  readonly CLOSING: 2;
  readonly CLOSED: 3;

  readonly url: string;
  readonly readyState: 0 | 1 | 2 | 3;
  readonly binaryType: 'arraybuffer';
  /** The SocketTask, for platform calls this class does not make. */
  readonly task: SocketTask;

  onopen: ((this: WxWebSocket, ev: WxOpenEvent) => void) | null;
  onmessage: ((this: WxWebSocket, ev: WxMessageEvent) => void) | null;
  onerror: ((this: WxWebSocket, ev: WxErrorEvent) => void) | null;
  onclose: ((this: WxWebSocket, ev: WxCloseEvent) => void) | null;

  /** Throws an InvalidStateError before the open event; does nothing once closing or closed. */
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  /** Throws as a browser does on a bad code (not 1000 or 3000-4999) or a reason over 123 UTF-8 bytes. */
  close(code?: number, reason?: string): void;
}
