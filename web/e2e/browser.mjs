// browser.mjs drives the demo page in the system's headless Chromium for
// browser_test.go (TestBrowserClient). It downloads no browser: playwright-core
// only speaks the DevTools protocol to /usr/bin/chromium.
//
// Protocol: one JSON command per line on stdin, {"seq": n, "cmd": "...", ...};
// one JSON line per answer on stdout, {"reply": n, "ok": true, ...} or
// {"reply": n, "ok": false, "error": "..."}. Lines without "reply" are events:
//   {"event": "ready", "version": "..."}           the browser is up
//   {"event": "page", "page": kind, ...}           the page's own report, from its
//                                                  console lines "wsmesh-demo {"event": kind, ...}"
//   {"event": "console"|"pageerror"|"requestfailed", ...}
// Commands run one at a time, each bounded by its "timeout" (ms, default 10000):
//   goto {url}                 load a page
//   connect {token, nodes?}    fill the form and press Connect
//   waitState {state}          wait until the status shows state; answers the
//                              status: {state, node, detail, session, sessionNode,
//                              expires, refreshes} (the session fields are what the
//                              page shows of the welcome frame: "" and 0 without one)
//   waitSession {notSession?}  wait until the page shows a session (other than
//                              notSession); answers the status
//   waitRefreshed {count, session?}  wait until the page shows at least count
//                              token refreshes (of that session); answers the status
//   waitMessage {id}           wait until the message list shows id; answers {text}
//   joinRoom {room}            type room into the room box and press Join
//   leaveRoom {room}           type room into the room box and press Leave
//   waitRooms {rooms}          wait until the room list shows exactly these rooms
//                              (in any order), none of them waiting to be joined
//                              again after a reconnect; answers {rooms: [{room,
//                              source, pending}], roomError}
//   waitRoomMessage {id}       wait until the room message list shows id;
//                              answers {text, room}
//   snapshot {}                the status, messages: [{id, text}], roomMessages:
//                              [{id, room, text}] and rooms (as waitRooms)
//   screenshot {path}          a full-page PNG
// stdin's end (or SIGTERM, SIGINT) closes the browser and exits.
//
// Environment: WSMESH_CHROMIUM (default /usr/bin/chromium) and
// WSMESH_E2E_PROFILE, a fresh, empty user data directory (default: a new
// temporary one, removed at exit).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const executablePath = process.env.WSMESH_CHROMIUM || '/usr/bin/chromium';
let profile = process.env.WSMESH_E2E_PROFILE;
const ownProfile = !profile;
if (ownProfile) profile = mkdtempSync(join(tmpdir(), 'wsmesh-chromium-'));

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 960, height: 900 },
  timeout: 30000,
});

let closing = null;
function shutdown(code) {
  if (!closing) {
    closing = context
      .close()
      .catch(() => {})
      .then(() => {
        if (ownProfile) rmSync(profile, { recursive: true, force: true });
        process.exit(code);
      });
  }
  return closing;
}
process.on('SIGTERM', () => shutdown(143));
process.on('SIGINT', () => shutdown(130));

const page = context.pages()[0] || (await context.newPage());
page.on('console', (msg) => {
  const text = msg.text();
  if (text.startsWith('wsmesh-demo ')) {
    try {
      const report = JSON.parse(text.slice('wsmesh-demo '.length));
      const kind = report.event;
      delete report.event;
      out({ event: 'page', page: kind, ...report });
      return;
    } catch (e) {
      // fall through: report it raw
    }
  }
  out({ event: 'console', type: msg.type(), text });
});
page.on('pageerror', (err) => out({ event: 'pageerror', error: String(err) }));
page.on('requestfailed', (req) => out({ event: 'requestfailed', url: req.url(), error: req.failure() && req.failure().errorText }));

async function status() {
  return page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const shown = !$('session-box').hidden;
    return {
      state: $('status').dataset.state,
      node: $('node').textContent,
      detail: $('detail').textContent,
      session: shown ? $('session').textContent : '',
      sessionNode: shown ? $('session-node').textContent : '',
      expires: shown ? Number($('expires').dataset.expires) || 0 : 0,
      refreshes: shown ? Number($('refreshed').dataset.count) : 0,
    };
  });
}

async function rooms() {
  return page.evaluate(() => ({
    rooms: Array.from(document.querySelectorAll('#rooms li[data-room]')).map((li) => ({
      room: li.dataset.room,
      source: li.dataset.source,
      pending: li.dataset.pending === '1',
    })),
    roomError: document.getElementById('room-error').textContent,
  }));
}

const commands = {
  async goto({ url, timeout }) {
    const resp = await page.goto(url, { waitUntil: 'load', timeout });
    return { status: resp && resp.status(), title: await page.title() };
  },
  async connect({ token, nodes, timeout }) {
    await page.fill('#token', token, { timeout });
    if (nodes !== undefined) await page.fill('#nodes', nodes, { timeout });
    await page.click('#connect', { timeout });
    return {};
  },
  async waitState({ state, timeout }) {
    await page.waitForSelector(`#status[data-state="${state}"]`, { timeout });
    return status();
  },
  async waitSession({ notSession, timeout }) {
    await page.waitForFunction(
      (not) => {
        const $ = (id) => document.getElementById(id);
        return !$('session-box').hidden && $('session').textContent !== '' && $('session').textContent !== not;
      },
      notSession || '',
      { timeout, polling: 50 }
    );
    return status();
  },
  async waitRefreshed({ count, session, timeout }) {
    await page.waitForFunction(
      ([n, s]) => {
        const $ = (id) => document.getElementById(id);
        return !$('session-box').hidden && Number($('refreshed').dataset.count) >= n && (!s || $('session').textContent === s);
      },
      [count || 1, session || ''],
      { timeout, polling: 50 }
    );
    return status();
  },
  async waitMessage({ id, timeout }) {
    const li = page.locator(`#messages li[data-id="${id}"]`);
    await li.waitFor({ state: 'visible', timeout });
    return { text: await li.innerText() };
  },
  async joinRoom({ room, timeout }) {
    await page.fill('#room', room, { timeout });
    await page.click('#join', { timeout });
    return {};
  },
  async leaveRoom({ room, timeout }) {
    await page.fill('#room', room, { timeout });
    await page.click('#leave', { timeout });
    return {};
  },
  async waitRooms({ rooms: want, timeout }) {
    await page.waitForFunction(
      (w) => {
        const lis = Array.from(document.querySelectorAll('#rooms li[data-room]'));
        const got = lis.map((li) => li.dataset.room).sort();
        return lis.every((li) => li.dataset.pending !== '1') && JSON.stringify(got) === JSON.stringify([...w].sort());
      },
      want || [],
      { timeout, polling: 50 }
    );
    return rooms();
  },
  async waitRoomMessage({ id, timeout }) {
    const li = page.locator(`#room-messages li[data-id="${id}"]`);
    await li.waitFor({ state: 'visible', timeout });
    return { text: await li.innerText(), room: await li.getAttribute('data-room') };
  },
  async snapshot() {
    const s = await status();
    s.messages = await page.$$eval('#messages li[data-id]', (lis) => lis.map((li) => ({ id: li.dataset.id, text: li.innerText })));
    s.roomMessages = await page.$$eval('#room-messages li[data-id]', (lis) =>
      lis.map((li) => ({ id: li.dataset.id, room: li.dataset.room, text: li.innerText }))
    );
    Object.assign(s, await rooms());
    return s;
  },
  async screenshot({ path, timeout }) {
    await page.screenshot({ path, fullPage: true, timeout });
    return { path };
  },
};

out({ event: 'ready', version: context.browser() ? context.browser().version() : '' });

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    out({ event: 'badcommand', line });
    continue;
  }
  const fn = commands[cmd.cmd];
  try {
    if (!fn) throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
    const result = await fn({ timeout: 10000, ...cmd });
    out({ ...result, reply: cmd.seq, ok: true });
  } catch (e) {
    out({ reply: cmd.seq, ok: false, error: String((e && e.message) || e) });
  }
}
await shutdown(0);
