// Type declarations of wsmesh.js, the wsmesh cluster client. The
// behaviour is described in wsmesh.js's comments and README.md
// ("Clients: browser, Android, mini-programs"); this file only types it.

/** Close codes the server sends (README.md, "Close codes"). */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  /** No close frame: network error, refused, or a dead heartbeat. */
  ABNORMAL: 1006;
  SERVER_RESTART: 1012;
  EVICTED: 4000;
  UNAUTHORIZED: 4001;
  SLOW_CONSUMER: 4002;
  /** Disconnected by the backend (POST /disconnect). */
  KICKED: 4003;
  TOO_MANY_MESSAGES: 4008;
}>;
/** One of the CloseCode values. */
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Reconnect delays: min*factor^attempt capped at max, with equal jitter. */
export interface Backoff {
  min: number;
  max: number;
  factor: number;
}

/** The defaults of every option; see WsMeshOptions. */
export declare const defaults: Readonly<{
  heartbeat: number;
  heartbeatTimeout: number;
  connectTimeout: number;
  restartJitter: number;
  stableAfter: number;
  refreshMargin: number;
  refreshRetry: number;
  backoff: Readonly<Backoff>;
}>;

/**
 * The delay before reconnect number attempt (0 for the first): a random
 * value in [base/2, base), base = min*factor^attempt capped at max.
 * random returns [0, 1) (Math.random by default).
 */
export declare function backoffDelay(attempt: number, backoff?: Partial<Backoff>, random?: () => number): number;

/**
 * How many ms from now to refresh a token with remaining ms left: 80% of
 * it, or margin ms (default 30000) before expiry if earlier, not before
 * half of it; at least 1 s.
 */
export declare function refreshDelay(remaining: number, margin?: number): number;

/**
 * What WsMesh needs of a WebSocket: the browser's shape. The browser's
 * and Node 22's WebSocket, and WxWebSocket (wsmesh-client/wx), fit.
 */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  /** ev.data: a string for text frames (anything else is ignored). */
  onmessage: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  /** ev.code, ev.reason, ev.wasClean. */
  onclose: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket class: WsMesh calls new WebSocket(url) with the token in url. */
export type WebSocketClass = new (url: string) => WebSocketLike;

/** setTimeout and clearTimeout, replaceable for tests. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: any): void;
}

export interface WsMeshOptions {
  /** The client JWT (getToken wins over it). */
  token?: string;
  /** Asked before every connection and for every token refresh. */
  getToken?: () => string | PromiseLike<string>;
  /** ms between {"type":"ping"} frames; 0: none. Default 25000. */
  heartbeat?: number;
  /** ms to wait for any frame after a ping before dropping the socket. Default 10000. */
  heartbeatTimeout?: number;
  /** ms for a socket to open. Default 10000. */
  connectTimeout?: number;
  /** Reconnect delays; default {min: 500, max: 30000, factor: 2}. */
  backoff?: Partial<Backoff>;
  /** Most ms to wait before reconnecting after 1012. Default 500. */
  restartJitter?: number;
  /** ms open after which the backoff restarts from min. Default 10000. */
  stableAfter?: number;
  /** Refresh the token with getToken before the session expires. Default true. */
  refresh?: boolean;
  /** Refresh at least this many ms before expiry. Default 30000. */
  refreshMargin?: number;
  /** ms before the one retry of a failed refresh. Default 5000. */
  refreshRetry?: number;
  /** Connect from the constructor. Default true. */
  autoConnect?: boolean;
  /** The WebSocket class; default the global WebSocket. */
  WebSocket?: WebSocketClass;
  /** For tests. */
  timers?: Timers;
  /** Math.random by default; for tests. */
  random?: () => number;
  /** Date.now by default; for tests. */
  now?: () => number;
}

/** The client's state; see the WsMesh class comment in wsmesh.js. */
export type WsMeshState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'evicted' | 'unauthorized' | 'kicked' | 'closed';

/** The current connection's welcome frame (mesh.session). */
export interface Session {
  /** This connection's id: new on every connection. */
  session: string;
  node: string;
  user: string;
  device: string;
  /** The token's exp (unix seconds), updated by each refresh; null if the welcome had none. */
  expires: number | null;
}

/** A frame from the server, parsed. */
export interface Frame {
  type: string;
  [field: string]: unknown;
}

/** {"type":"message"}: a POST /send, /broadcast or /publish. */
export interface MessageFrame extends Frame {
  type: 'message';
  id: string;
  data: unknown;
  /** The room of a room message (POST /publish); absent otherwise. */
  room?: string;
}

/** {"type":"reply"}: the backend's answer to a message sent with send(). */
export interface ReplyFrame extends Frame {
  type: 'reply';
  id: string;
  data: unknown;
}

/** How a room joined mesh.rooms. */
export type JoinSource = 'client' | 'backend' | 'rejoin';
/** How a room left mesh.rooms (or a leave() was answered). */
export type LeaveSource = 'client' | 'backend' | 'refused' | 'reconnect' | 'evicted' | 'kicked' | 'unauthorized' | 'closed';

export interface CloseInfo {
  /** 1006 for network errors, refused connections and dead heartbeats. */
  code: number;
  reason: string;
  wasClean: boolean;
  /** Whether a reconnect follows, after delay ms. */
  reconnect: boolean;
  delay: number;
}

/**
 * What the "error" event carries: getToken's rejection (usually an Error,
 * but whatever it threw), the WebSocket constructor's exception, or a failed
 * token refresh, which has op "refresh", reason and retry.
 */
export interface WsMeshError extends Error {
  op?: 'refresh';
  /** Why the refresh failed: the server's reason, "no answer", or the getToken error's message. */
  reason?: string;
  /** Whether one more try follows. */
  retry?: boolean;
}

/** What join() and leave() reject with. */
export interface RoomError extends Error {
  op: 'join' | 'leave';
  room: string;
  /** The server's reason ("not allowed", ...), or why the client could not ask ("not connected: closed"). */
  reason: string;
}

/** What send() rejects with. */
export interface MessageError extends Error {
  op: 'message';
  /** The id the message was (or would have been) sent with. */
  id: string;
  /** The node's reason, "connection lost", or why it was not sent. */
  reason: string;
  /** Whether it went out: if true the backend may have it. */
  sent: boolean;
}

export interface SendOptions {
  /** Wait after the ack for the backend's reply and resolve with its data. */
  reply?: boolean;
}

/** The events and their listeners' arguments. */
export interface WsMeshEvents {
  message: (data: unknown, id: string, frame: MessageFrame) => void;
  joined: (room: string, info: { source: JoinSource }) => void;
  left: (room: string, info: { source: LeaveSource; reason?: string }) => void;
  open: (info: { url: string }) => void;
  close: (info: CloseInfo) => void;
  state: (state: WsMeshState, previous: WsMeshState) => void;
  reconnect: (info: { attempt: number; delay: number; url: string }) => void;
  welcome: (session: Session) => void;
  refreshed: (info: { expires: number | null; session: string }) => void;
  evicted: (info: { reason: string }) => void;
  unauthorized: (info: { reason: string }) => void;
  kicked: (info: { reason: string }) => void;
  pong: () => void;
  /** A reply to a send() that did not wait for it. */
  reply: (data: unknown, id: string, frame: ReplyFrame) => void;
  frame: (frame: Frame) => void;
  error: (err: WsMeshError) => void;
}

export type WsMeshEventType = keyof WsMeshEvents;

/** A listener, called with the WsMesh as this. */
export type WsMeshListener<K extends WsMeshEventType> = (this: WsMesh, ...args: Parameters<WsMeshEvents[K]>) => void;

/** A connection to a wsmesh cluster that heals itself. */
export declare class WsMesh {
  /**
   * @param urls ws:// or wss:// URLs of the nodes' /ws, tried in turn
   * @throws TypeError without a URL or a WebSocket class
   */
  constructor(urls: string | string[], options?: WsMeshOptions);

  /** The node URLs, as given. */
  readonly urls: string[];
  /** The current state. */
  readonly state: WsMeshState;
  /** The URL (without token) of the socket being dialed or open, else null. */
  readonly url: string | null;
  /** Consecutive reconnects since the last stable connection. */
  readonly attempt: number;
  /** The current session, from its welcome; null before it and once the socket closed. */
  readonly session: Session | null;
  /** The rooms the server confirmed, in the order joined: a new Set each time. */
  readonly rooms: Set<string>;

  /** Adds a listener; returns a function that removes it. */
  on<K extends WsMeshEventType>(type: K, fn: WsMeshListener<K>): () => void;
  /** Removes a listener added with on(). */
  off<K extends WsMeshEventType>(type: K, fn: WsMeshListener<K>): void;

  /** Connects, unless a socket is open or being dialed. */
  connect(): void;
  /** Closes the socket with 1000 and stops; no reconnect until connect(). */
  close(): void;
  /** Replaces the token used for the next connection (and refresh() without getToken). */
  setToken(token: string): void;
  /** Refreshes the open session's token now; the answer comes as "refreshed" or "error". */
  refresh(): void;
  /** Joins room: resolves with room on the server's joined; rejects with a RoomError. */
  join(room: string): Promise<string>;
  /** Leaves room: resolves with room on the server's left; rejects with a RoomError. */
  leave(room: string): Promise<string>;
  /**
   * Sends data (any JSON value but null) to the backend. Resolves at the
   * node's ack with undefined, or with options.reply with the reply's data
   * (undefined if none came); rejects with a MessageError.
   */
  send(data: unknown, options?: SendOptions): Promise<unknown>;

  // Listeners set as properties (one each), called before those added with on().
  onmessage?: WsMeshListener<'message'> | null;
  onjoined?: WsMeshListener<'joined'> | null;
  onleft?: WsMeshListener<'left'> | null;
  onopen?: WsMeshListener<'open'> | null;
  onclose?: WsMeshListener<'close'> | null;
  onstate?: WsMeshListener<'state'> | null;
  onreconnect?: WsMeshListener<'reconnect'> | null;
  onwelcome?: WsMeshListener<'welcome'> | null;
  onrefreshed?: WsMeshListener<'refreshed'> | null;
  onevicted?: WsMeshListener<'evicted'> | null;
  onunauthorized?: WsMeshListener<'unauthorized'> | null;
  onkicked?: WsMeshListener<'kicked'> | null;
  onpong?: WsMeshListener<'pong'> | null;
  onreply?: WsMeshListener<'reply'> | null;
  onframe?: WsMeshListener<'frame'> | null;
  onerror?: WsMeshListener<'error'> | null;
}
