// types-check.ts uses the npm package's public API through its exports
// ("wsmesh-client", "wsmesh-client/wx") so that tsc --strict checks
// wsmesh.d.ts and wx.d.ts against real use; it is never run or shipped.
// web_test.go (TestTypes) compiles it when tsc is installed:
//   tsc --noEmit --strict --target es2020 --lib es2020,dom \
//     --module nodenext --moduleResolution nodenext types-check.ts
import { WsMesh, CloseCode, backoffDelay, refreshDelay, defaults } from 'wsmesh-client';
import type { CloseInfo, MessageError, RoomError, Session, WsMeshError, WsMeshState } from 'wsmesh-client';
import { WxWebSocket, wxDefaults } from 'wsmesh-client/wx';
import type { MiniProgramApi, SocketTask } from 'wsmesh-client/wx';

declare function fetchToken(): Promise<string>;
declare function show(...args: unknown[]): void;

// The browser's WebSocket class fits the WebSocket option.
const mesh = new WsMesh(['wss://a.example/ws', 'wss://b.example/ws'], {
  getToken: fetchToken,
  heartbeat: 20000,
  backoff: { max: 60000 },
  WebSocket: WebSocket,
  autoConnect: false,
});
mesh.connect();

mesh.on('message', (data, id, frame) => {
  const room: string | undefined = frame.room;
  show(data, id.length, room);
});
mesh.onmessage = function (data, id) {
  const self: WsMesh = this;
  show(self.state, data, id);
};
mesh.on('state', (state: WsMeshState, previous: WsMeshState) => show(state, previous));
mesh.on('welcome', (s: Session) => show(s.session, s.node, s.expires === null ? 'no exp' : s.expires + 1));
mesh.on('refreshed', ({ expires, session }) => show(expires, session));
mesh.on('close', (info: CloseInfo) => {
  if (info.code === CloseCode.SERVER_RESTART && info.reconnect) show(info.delay);
});
mesh.on('reconnect', ({ attempt, delay, url }) => show(attempt + delay, url));
mesh.on('evicted', ({ reason }) => show(reason));
mesh.on('kicked', ({ reason }) => show(reason));
mesh.on('unauthorized', () => mesh.connect());
mesh.on('joined', (room, { source }) => show(room, source === 'rejoin'));
const stopLeft = mesh.on('left', (room, { source, reason }) => show(room, source, reason));
stopLeft();
mesh.on('reply', (data, id, frame) => show(data, id, frame.type));
mesh.on('frame', (f) => show(f.type));
mesh.on('pong', () => show('pong'));
mesh.on('error', (err: WsMeshError) => {
  if (err.op === 'refresh') show(err.reason, err.retry);
});
const onOpen = ({ url }: { url: string }) => show(url);
mesh.on('open', onOpen);
mesh.off('open', onOpen);

async function use(): Promise<void> {
  const room: string = await mesh.join('live:42');
  try {
    await mesh.leave(room);
  } catch (e) {
    const err = e as RoomError;
    show(err.op, err.room, err.reason);
  }
  const reply: unknown = await mesh.send({ text: 'hi' }, { reply: true });
  await mesh.send(42).catch((e: MessageError) => show(e.id, e.reason, e.sent));
  show(reply, mesh.rooms.has(room), mesh.session && mesh.session.user, mesh.url, mesh.attempt, mesh.urls[0]);
  mesh.setToken('jwt');
  mesh.refresh();
  mesh.close();
}
void use;

show(backoffDelay(3, { min: 100 }), backoffDelay(0, undefined, Math.random), refreshDelay(3600000), defaults.backoff.max);
const code: CloseCode = CloseCode.KICKED;
show(code);

// WxWebSocket on a mini-program API object.
declare const wx: MiniProgramApi;
const mp = new WsMesh('wss://push.example.com/ws', {
  WebSocket: WxWebSocket.for(wx),
  getToken: () => fetchToken(),
});
const alipay: MiniProgramApi = {
  connectSocket: (o) => {
    show(o.url, o.protocols);
    return undefined;
  },
};
const Ws = WxWebSocket.for(alipay, { connect: { multiple: true }, closeTimeout: wxDefaults.closeTimeout });
const ws = new Ws('wss://n1/ws', ['p']);
ws.onmessage = (ev) => show(typeof ev.data === 'string' ? ev.data : ev.data.byteLength, ev.isBuffer);
ws.onclose = (ev) => show(ev.code, ev.reason, ev.wasClean);
ws.onerror = (ev) => show(ev.message);
if (ws.readyState === WxWebSocket.OPEN && ws.readyState === ws.OPEN) ws.send(new Uint8Array(2));
ws.close(1000, 'bye');
const task: SocketTask = ws.task;
show(mp.state, task, Ws.CLOSED);
