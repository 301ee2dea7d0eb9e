package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
	"wsmesh/session"
)

// The browser test drives web/index.html (the demo page, served by the
// nodes at /demo/) in the system's headless Chromium through
// web/e2e/browser.mjs (playwright-core, no browser download): see that file
// for the line protocol between this test and the driver.

const e2eDir = "web/e2e"

// requirePlaywright checks that `npm ci` ran in web/e2e: missing, it fails
// the test on CI and skips it elsewhere, like testsupport.RequireTool.
func requirePlaywright(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(e2eDir, "node_modules", "playwright-core", "package.json")); err == nil {
		return
	}
	msg := "playwright-core not installed in " + e2eDir + ": run `cd web/e2e && npm ci` (.ci/run does)"
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

// browserEvent is an event line of the driver, with when it arrived.
type browserEvent struct {
	at time.Time
	m  map[string]any
}

func (e browserEvent) String() string {
	b, _ := json.Marshal(e.m)
	return string(b)
}

// browser is a running web/e2e/browser.mjs with its Chromium.
type browser struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan map[string]any
	events  chan browserEvent
	exited  chan error // receives the driver's exit once its output is read
	nextID  int
}

// startBrowser starts the driver with a fresh Chromium profile and waits
// until the browser is up. When the test ends it closes stdin (the driver
// closes Chromium and exits) and waits; a driver that hangs gets SIGTERM,
// then SIGKILL.
func startBrowser(t *testing.T, nodeBin, chromium string) *browser {
	t.Helper()
	lw := testsupport.NewLogWriter(t) // quiet once the cleanup below has run
	cmd := exec.Command(nodeBin, "browser.mjs")
	cmd.Dir = e2eDir
	cmd.Env = append(os.Environ(), "WSMESH_CHROMIUM="+chromium, "WSMESH_E2E_PROFILE="+t.TempDir())
	cmd.Stderr = prefixWriter{"browser stderr: ", lw}
	// Should the test binary die, the driver goes with it, and Chromium,
	// whose DevTools pipe then closes, with the driver.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{cmd: cmd, stdin: stdin, replies: make(chan map[string]any, 4), events: make(chan browserEvent, 4096), exited: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				fmt.Fprintf(lw, "browser stdout: %s", sc.Bytes())
				continue
			}
			if _, ok := m["reply"]; ok {
				select {
				case b.replies <- m:
				default: // an answer no one waits for any more (the test failed)
					fmt.Fprintf(lw, "browser: late answer %s", sc.Bytes())
				}
				continue
			}
			ev := browserEvent{at: time.Now(), m: m}
			fmt.Fprintf(lw, "browser: %s", ev)
			select {
			case b.events <- ev:
			default:
				fmt.Fprintf(lw, "browser: event buffer full, dropped %s", ev)
			}
		}
		b.exited <- cmd.Wait() // all output read: now Wait may close the pipe
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case err := <-b.exited:
			if err != nil {
				t.Errorf("browser driver: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("browser driver did not exit within 15s of its stdin closing: SIGTERM")
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-b.exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				select {
				case <-b.exited:
				case <-time.After(5 * time.Second):
					t.Errorf("browser driver's output still open 5s after SIGKILL (a Chromium process holds it?)")
				}
			}
		}
	})
	ready := b.waitEvent(t, "the browser to start", 30*time.Second, func(m map[string]any) bool { return m["event"] == "ready" })
	t.Logf("Chromium %v up", ready.m["version"])
	return b
}

// prefixWriter logs each write with a prefix.
type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Fprintf(p.w, "%s%s", p.prefix, line)
	}
	return len(b), nil
}

// do sends a command and returns the driver's answer; an error answer, or
// none within the command's timeout and 5s more, fails the test.
func (b *browser) do(t *testing.T, cmd string, args map[string]any) map[string]any {
	t.Helper()
	b.nextID++
	msg := map[string]any{"timeout": testsupport.WaitLimit.Milliseconds()}
	for k, v := range args {
		msg[k] = v
	}
	msg["seq"], msg["cmd"] = b.nextID, cmd
	line, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("browser %s: write: %v", cmd, err)
	}
	select {
	case r := <-b.replies:
		if r["reply"] != float64(b.nextID) {
			t.Fatalf("browser %s: answer %v is not to command %d", cmd, r, b.nextID)
		}
		if r["ok"] != true {
			t.Fatalf("browser %s %s: %v", cmd, summarize(args), r["error"])
		}
		return r
	case err := <-b.exited:
		t.Fatalf("browser driver exited during %s: %v", cmd, err)
	case <-time.After(testsupport.WaitLimit + 5*time.Second):
		t.Fatalf("browser %s: no answer within %s", cmd, testsupport.WaitLimit+5*time.Second)
	}
	return nil
}

// summarize shows a command's arguments without the token.
func summarize(args map[string]any) string {
	parts := []string{}
	for k, v := range args {
		if k == "token" {
			v = "…"
		}
		parts = append(parts, fmt.Sprintf("%s=%v", k, v))
	}
	return strings.Join(parts, " ")
}

// waitEvent reads events until one matches, failing after limit. Events
// read on the way are returned to no one: callers wait in order.
func (b *browser) waitEvent(t *testing.T, what string, limit time.Duration, match func(map[string]any) bool) browserEvent {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		select {
		case ev := <-b.events:
			if match(ev.m) {
				return ev
			}
		case err := <-b.exited:
			t.Fatalf("browser driver exited while waiting for %s: %v", what, err)
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for the browser: %s", limit, what)
		}
	}
}

// drain returns the events that have arrived and not been read.
func (b *browser) drain() []browserEvent {
	var evs []browserEvent
	for {
		select {
		case ev := <-b.events:
			evs = append(evs, ev)
		default:
			return evs
		}
	}
}

// pageKind is the page's own event name ("open", "close", "state", ...).
func pageKind(m map[string]any) string {
	if m["event"] != "page" {
		return ""
	}
	s, _ := m["page"].(string)
	return s
}

// shownNode is the node address the page says it is connected to.
func shownNode(st map[string]any) string {
	return strings.TrimPrefix(fmt.Sprint(st["node"]), "connected to ")
}

// sessionOwner asks every node in nodes for GET /cluster until all agree
// that the cluster holds exactly one session, and returns the node holding it.
func sessionOwner(t *testing.T, nodes []*nodetest.Node) *nodetest.Node {
	t.Helper()
	var owner string
	testsupport.WaitFor(t, "every node's /cluster to show exactly one session, on the same node", func() bool {
		owner = ""
		for _, n := range nodes {
			code, out, _ := n.API(t, http.MethodGet, "/cluster", "")
			if code != http.StatusOK || out["table_size"] != 1.0 {
				return false
			}
			holder := ""
			for _, m := range out["members"].([]any) {
				mm := m.(map[string]any)
				if mm["sessions"] == 1.0 {
					holder = fmt.Sprint(mm["name"])
				}
			}
			if holder == "" || owner != "" && holder != owner {
				return false
			}
			owner = holder
		}
		return true
	})
	for _, n := range nodes {
		if n.Cfg.Node.Name == owner {
			return n
		}
	}
	t.Fatalf("/cluster names %q, not one of the running nodes", owner)
	return nil
}

// TestBrowserClient runs the demo page (web/index.html with web/wsmesh.js)
// in headless Chromium against three in-process nodes, twice: "nginx" opens
// the page and its WebSocket through nginx running deploy/nginx.conf (the
// upstream picks a live node), "direct" opens the page on the first node and
// gives it all three nodes' URLs to try in turn. In each:
//
//	(0) a token the server refuses: the page shows "unauthorized", and its
//	    client reports the 4001 close with no reconnect to follow;
//	(a) a good token pasted into the form: the page connects and shows its
//	    welcome (a session id, on the node /cluster says holds it), and a
//	    /send through another node shows up in its message list (screenshot);
//	(b) a second login of the same user and device on another node: the page
//	    shows "evicted" and does not reconnect (which would evict the newer login);
//	(c) a fresh page load with ?token= connects again (evicting that login),
//	    with a new session id. Rooms: the token's claim is live:*; the room
//	    box's join of "news" shows the server's "not allowed", its join of
//	    live:42 lists the room, POST /rooms/join puts the page in notice:42
//	    too, and a POST /publish to live:42 through another node shows as a
//	    room message, not a direct one. The node the page is on (found by
//	    /cluster session counts) shuts down as on SIGTERM: the page gets
//	    1012, reconnects at once to another node with a new session id, and
//	    a /send reaches it; it joins live:42 again by itself (not notice:42,
//	    the backend's), a publish through the third node reaches it there,
//	    and the room box's Leave takes it out of the room on every node;
//	(d) a page load with ?token_url= (a token endpoint minting 4 s tokens):
//	    the client refreshes its token over the open socket, again and again,
//	    and the session outlives its first token (and the server's leeway)
//	    with the same session id, no reconnect (screenshot);
//	(e) POST /disconnect of that session id through another node: the page
//	    shows "kicked" with the backend's reason, and no reconnect to follow.
func TestBrowserClient(t *testing.T) {
	chromium := testsupport.RequireTool(t, "chromium", "chromium")
	nodeBin := testsupport.RequireTool(t, "node", "nodejs")
	requirePlaywright(t)
	t.Run("nginx", func(t *testing.T) {
		testsupport.RequireTool(t, "nginx", "nginx")
		nodes := browserCluster(t)
		ng := startNginx(t, []string{nodes[0].Addr(), nodes[1].Addr(), nodes[2].Addr()}, nginxOpts{})
		// The page's default node is its own host: nginx.
		browserScenario(t, nodeBin, chromium, nodes, "http://"+ng+"/demo/", "", ng)
	})
	t.Run("direct", func(t *testing.T) {
		nodes := browserCluster(t)
		// The page comes from t1 but lists it last, so its WebSocket goes to
		// t2 first. Chromium keeps a spare, silent connection to the page's
		// origin; http.Server.Shutdown waits up to 5s for such a connection
		// before the node closes its sessions, which would delay the 1012
		// this test times (past node.shutdown_timeout here, so it becomes a
		// cut, 1006). The nginx subtest has no such connection to a node.
		list := strings.Join([]string{nodes[1].Addr(), nodes[2].Addr(), nodes[0].Addr()}, ",")
		browserScenario(t, nodeBin, chromium, nodes, "http://"+nodes[0].Addr()+"/demo/", list, "")
	})
}

// browserCluster is three nodes serving the demo page.
func browserCluster(t *testing.T) []*nodetest.Node {
	return nodetest.StartCluster(t, 3, func(i int, s *nodetest.Setup) {
		s.Cfg.HTTP.Demo = "on"
		s.Cfg.Log.Level = "info"
	})
}

// browserScenario runs TestBrowserClient's steps. The page is loaded from
// pageURL with ?nodes=nodeList ("": the page's default, its own host).
// proxy is the address the page connects through ("": it connects to the
// nodes directly and shows which one it is on).
func browserScenario(t *testing.T, nodeBin, chromium string, nodes []*nodetest.Node, pageURL, nodeList, proxy string) {
	// query is the page's URL with ?nodes= and these parameters ("": left out).
	query := func(kv ...string) string {
		v := url.Values{}
		if nodeList != "" {
			v.Set("nodes", nodeList)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] != "" {
				v.Set(kv[i], kv[i+1])
			}
		}
		return pageURL + "?" + v.Encode()
	}
	// welcomed checks what the page shows of its welcome frame: a session
	// id other than notSession, on node n, expiring when one of the tokens
	// does (unix seconds); it returns the session id and expiry.
	welcomed := func(step string, st map[string]any, n *nodetest.Node, notSession string, tokens ...string) (string, int64) {
		t.Helper()
		sid, _ := st["session"].(string)
		if sid == "" || sid == notSession {
			t.Fatalf("%s the page shows session %q, want a new session id (not %q)", step, sid, notSession)
		}
		if st["sessionNode"] != n.Cfg.Node.Name {
			t.Fatalf("%s the page's welcome names node %v, want %s", step, st["sessionNode"], n.Cfg.Node.Name)
		}
		got, _ := st["expires"].(float64)
		var exps []int64
		for _, tok := range tokens {
			if exp := tokenExp(t, tok); exp == int64(got) {
				return sid, exp
			} else {
				exps = append(exps, exp)
			}
		}
		t.Fatalf("%s the page shows expires %.0f, want its token's exp (one of %v)", step, got, exps)
		return "", 0
	}
	// shows checks the node the page says it is on: the proxy, or the node.
	shows := func(step, shown string, n *nodetest.Node) {
		t.Helper()
		want := n.Addr()
		if proxy != "" {
			want = proxy
		}
		if shown != want {
			t.Fatalf("%s the page says it is connected to %q, want %s (/cluster: %s on %s)", step, shown, want, n.Cfg.Node.Name, n.Addr())
		}
	}
	t.Logf("page at %s; nodes %s %s %s", pageURL, nodes[0].Addr(), nodes[1].Addr(), nodes[2].Addr())

	start := time.Now()
	b := startBrowser(t, nodeBin, chromium)
	t.Logf("browser driver ready in %s", time.Since(start).Round(time.Millisecond))

	// (0) A token the server refuses: 4001, no reconnect.
	r := b.do(t, "goto", map[string]any{"url": query("token", "not-a-jwt")})
	if r["status"] != 200.0 || r["title"] != "wsmesh demo" {
		t.Fatalf("page load: %v", r)
	}
	st := b.do(t, "waitState", map[string]any{"state": "unauthorized"})
	if !strings.Contains(fmt.Sprint(st["detail"]), "token malformed") {
		t.Errorf("(0) the unauthorized page says %q, want the server's reason (token malformed)", st["detail"])
	}
	var welcome0 *browserEvent
	b.waitEvent(t, "the page to report close 4001 without reconnect", testsupport.WaitLimit, func(m map[string]any) bool {
		if pageKind(m) == "welcome" {
			welcome0 = &browserEvent{m: m}
		}
		return pageKind(m) == "close" && m["code"] == 4001.0 && m["reconnect"] == false
	})
	if welcome0 != nil {
		t.Fatalf("(0) the refused connection got a welcome: %s", welcome0)
	}

	// (a) Paste a good token into the form, press Connect. Its rooms claim
	// is for (c).
	const room, backendRoom = "live:42", "notice:42"
	tok := nodes[0].TokenRooms(t, "42", "web", "live:*")
	connectAt := time.Now()
	b.do(t, "connect", map[string]any{"token": tok})
	st = b.do(t, "waitState", map[string]any{"state": "open"})
	t.Logf("(a) page open %s after pressing Connect, showing %q", time.Since(connectAt).Round(time.Millisecond), st["node"])
	owner := sessionOwner(t, nodes)
	shows("(a)", shownNode(st), owner)
	st = b.do(t, "waitSession", nil)
	sessionA, _ := welcomed("(a)", st, owner, "", tok)
	t.Logf("(a) welcome: session %s on %s, expires %.0f", sessionA, st["sessionNode"], st["expires"])
	var sender *nodetest.Node
	for _, n := range nodes {
		if n != owner {
			sender = n
			break
		}
	}
	sentAt := time.Now()
	out := sender.Send(t, `{"users":["42"],"data":{"hello":"browser","step":"a"}}`)
	if out["delivered"] != 1.0 {
		t.Fatalf("(a) send on %s: %v", sender.Cfg.Node.Name, out)
	}
	if res := out["results"].([]any)[0].(map[string]any); res["node"] != owner.Cfg.Node.Name || res["device"] != "web" {
		t.Fatalf("(a) send result %v, want delivered by %s", res, owner.Cfg.Node.Name)
	}
	id := fmt.Sprint(out["id"])
	msg := b.do(t, "waitMessage", map[string]any{"id": id})
	t.Logf("(a) page on %s; /send on %s shown %s later: %q", owner.Cfg.Node.Name, sender.Cfg.Node.Name, time.Since(sentAt).Round(time.Millisecond), msg["text"])
	if text := fmt.Sprint(msg["text"]); !strings.Contains(text, id) || !strings.Contains(text, `"hello": "browser"`) {
		t.Fatalf("(a) the page shows %q for message %s", text, id)
	}
	out2 := owner.Send(t, `{"users":["42"],"data":"second, through the owner"}`)
	b.do(t, "waitMessage", map[string]any{"id": out2["id"]})
	shotDir := t.TempDir()
	if d := os.Getenv("WSMESH_SCREENSHOT_DIR"); d != "" { // to keep them: the temp dir goes with the test
		shotDir = d
	}
	name := "direct"
	if proxy != "" {
		name = "nginx"
	}
	shot := filepath.Join(shotDir, "demo-"+name+"-after-send.png")
	b.do(t, "screenshot", map[string]any{"path": shot})
	t.Logf("(a) screenshot: %s", shot)

	// (b) The same user and device log in on another node: the page is evicted.
	var other *nodetest.Node
	for _, n := range nodes {
		if n != owner && n != sender {
			other = n
		}
	}
	b.drain()
	loginAt := time.Now()
	goClient := other.Dial(t, other.Token(t, "42", "web"), testsupport.DialOpts{})
	st = b.do(t, "waitState", map[string]any{"state": "evicted"})
	t.Logf("(b) page shows evicted %s after the login on %s: %q", time.Since(loginAt).Round(time.Millisecond), other.Cfg.Node.Name, st["detail"])
	b.waitEvent(t, "the page to report close 4000 without reconnect", testsupport.WaitLimit, func(m map[string]any) bool {
		return pageKind(m) == "close" && m["code"] == 4000.0 && m["reconnect"] == false
	})
	// A page that reconnected would evict the Go client in turn. The client
	// backs off 250-500ms first, so a quiet 2s shows it does not.
	const quiet = 2 * time.Second
	quietTimer := time.NewTimer(quiet)
	select {
	case <-goClient.Closed():
		t.Fatalf("(b) the newer login was closed (code %d %q): the evicted page reconnected", goClient.Code, goClient.Reason)
	case <-quietTimer.C:
	}
	for _, ev := range b.drain() {
		if k := pageKind(ev.m); k == "open" || k == "reconnect" || k == "state" && ev.m["state"] != "evicted" {
			t.Fatalf("(b) the page did something after its eviction: %s", ev)
		}
	}
	if st := b.do(t, "snapshot", nil); st["state"] != "evicted" {
		t.Fatalf("(b) page state %v %s after eviction, want still evicted", st["state"], quiet)
	}
	shotEvicted := filepath.Join(shotDir, "demo-"+name+"-evicted.png")
	b.do(t, "screenshot", map[string]any{"path": shotEvicted})
	t.Logf("(b) screenshot: %s", shotEvicted)

	// (c) Load the page again with ?token=: it connects at once and takes
	// over, evicting the Go client.
	reloadAt := time.Now()
	b.do(t, "goto", map[string]any{"url": query("token", tok)})
	st = b.do(t, "waitState", map[string]any{"state": "open"})
	t.Logf("(c) reloaded page open %s after the load began", time.Since(reloadAt).Round(time.Millisecond))
	if code, reason := goClient.WaitClose(t); code != 4000 {
		t.Fatalf("(c) the Go client's session closed with %d %q, want 4000 (evicted by the page)", code, reason)
	}
	owner = sessionOwner(t, nodes)
	shows("(c)", shownNode(st), owner)
	st = b.do(t, "waitSession", map[string]any{"notSession": sessionA})
	sessionC, _ := welcomed("(c)", st, owner, sessionA, tok)

	// Rooms, through the room box and the backend.
	b.do(t, "joinRoom", map[string]any{"room": "news"})
	b.waitEvent(t, "(c) the page to report that joining news was refused", testsupport.WaitLimit, func(m map[string]any) bool {
		return pageKind(m) == "roomerror" && m["room"] == "news" && m["op"] == "join" && m["reason"] == "not allowed"
	})
	if st := b.do(t, "snapshot", nil); !strings.Contains(fmt.Sprint(st["roomError"]), "not allowed") || len(st["rooms"].([]any)) != 0 {
		t.Fatalf("(c) after a refused join the page shows rooms %v and error %q, want none and the server's reason", st["rooms"], st["roomError"])
	}
	joinAt := time.Now()
	b.do(t, "joinRoom", map[string]any{"room": room})
	b.do(t, "waitRooms", map[string]any{"rooms": []string{room}})
	t.Logf("(c) page in %s %s after pressing Join", room, time.Since(joinAt).Round(time.Millisecond))
	var pub *nodetest.Node // a node the page is not on
	for _, n := range nodes {
		if n != owner {
			pub = n
			break
		}
	}
	if code, out, _ := pub.API(t, http.MethodPost, "/rooms/join", fmt.Sprintf(`{"room":%q,"users":["42"]}`, backendRoom)); code != http.StatusOK || out["joined"] != 1.0 {
		t.Fatalf("(c) POST /rooms/join %s on %s: %d %v", backendRoom, pub.Cfg.Node.Name, code, out)
	}
	rs := b.do(t, "waitRooms", map[string]any{"rooms": []string{room, backendRoom}})
	if got := roomSources(rs); got[room] != "client" || got[backendRoom] != "backend" {
		t.Fatalf("(c) the page lists rooms %v, want %s joined by the client and %s by the backend", rs["rooms"], room, backendRoom)
	}
	waitRoomOn(t, nodes, room, owner)
	published := pub.PostJSON(t, "/publish", fmt.Sprintf(`{"room":%q,"data":{"text":"hello room","step":"c"}}`, room))
	if published["delivered"] != 1.0 {
		t.Fatalf("(c) publish to %s on %s: %v", room, pub.Cfg.Node.Name, published)
	}
	rm := b.do(t, "waitRoomMessage", map[string]any{"id": published["id"]})
	if rm["room"] != room || !strings.Contains(fmt.Sprint(rm["text"]), "hello room") {
		t.Fatalf("(c) the page shows room message %s as %v in room %v", published["id"], rm["text"], rm["room"])
	}
	for _, m := range b.do(t, "snapshot", nil)["messages"].([]any) {
		if m.(map[string]any)["id"] == published["id"] {
			t.Fatalf("(c) room message %s is listed with the direct messages too", published["id"])
		}
	}
	t.Logf("(c) /publish to %s on %s shown as a room message: %q", room, pub.Cfg.Node.Name, rm["text"])

	t.Logf("(c) /cluster: the page's session is on %s; stopping it as SIGTERM would", owner.Cfg.Node.Name)
	var survivors []*nodetest.Node
	for _, n := range nodes {
		if n != owner {
			survivors = append(survivors, n)
		}
	}
	b.drain()
	stopAt := time.Now()
	owner.Stop(t)
	stopTook := time.Since(stopAt)
	droppedBackendRoom := false
	closeEv := b.waitEvent(t, "the page to see 1012", testsupport.WaitLimit, func(m map[string]any) bool {
		if pageKind(m) == "left" && m["room"] == backendRoom && m["source"] == "reconnect" {
			droppedBackendRoom = true
		}
		return pageKind(m) == "close"
	})
	if closeEv.m["code"] != 1012.0 || closeEv.m["reconnect"] != true {
		t.Fatalf("(c) the page's socket closed with %s, want 1012 and a reconnect", closeEv)
	}
	if d, _ := closeEv.m["delay"].(float64); d > 500 {
		t.Fatalf("(c) the page waits %vms before reconnecting after 1012, want at most restartJitter (500ms)", d)
	}
	openEv := b.waitEvent(t, "the page to reconnect", testsupport.WaitLimit, func(m map[string]any) bool { return pageKind(m) == "open" })
	newOwner := sessionOwner(t, survivors)
	t.Logf("(c) %s stopped in %s; the page saw 1012 %s after the stop began, reconnected after %vms, was open on %s %s after the stop began",
		owner.Cfg.Node.Name, stopTook.Round(time.Millisecond), closeEv.at.Sub(stopAt).Round(time.Millisecond), closeEv.m["delay"],
		newOwner.Cfg.Node.Name, openEv.at.Sub(stopAt).Round(time.Millisecond))
	shows("(c) after 1012:", fmt.Sprint(openEv.m["node"]), newOwner)
	st = b.do(t, "waitState", map[string]any{"state": "open"})
	shows("(c) after 1012:", shownNode(st), newOwner)
	st = b.do(t, "waitSession", map[string]any{"notSession": sessionC})
	sessionC2, _ := welcomed("(c) after 1012:", st, newOwner, sessionC, tok)
	t.Logf("(c) after 1012: session %s on %s (was %s)", sessionC2, newOwner.Cfg.Node.Name, sessionC)
	if !droppedBackendRoom {
		t.Fatalf("(c) the page did not report leaving %s (joined by the backend) when its socket closed", backendRoom)
	}
	rejoinEv := b.waitEvent(t, "(c) the page to join "+room+" again", testsupport.WaitLimit, func(m map[string]any) bool {
		return pageKind(m) == "joined" && m["room"] == room && m["source"] == "rejoin"
	})
	rs = b.do(t, "waitRooms", map[string]any{"rooms": []string{room}})
	if got := roomSources(rs); got[room] != "client" {
		t.Fatalf("(c) after 1012: the page lists rooms %v", rs["rooms"])
	}
	t.Logf("(c) after 1012: in %s again %s after the stop began; %s (the backend's) dropped", room, rejoinEv.at.Sub(stopAt).Round(time.Millisecond), backendRoom)

	// Send through the surviving node that the page is not on: poll until
	// its table knows the new session.
	var via *nodetest.Node
	for _, n := range survivors {
		if n != newOwner {
			via = n
		}
	}
	var delivered map[string]any
	tries := 0
	sendAt := time.Now()
	testsupport.PollUntil(t, "a /send on "+via.Cfg.Node.Name+" to reach the reconnected page", testsupport.WaitLimit, func() bool {
		tries++
		out := via.Send(t, fmt.Sprintf(`{"users":["42"],"data":{"step":"c","try":%d}}`, tries))
		if out["delivered"] == 1.0 {
			delivered = out
			return true
		}
		return false
	})
	if res := delivered["results"].([]any)[0].(map[string]any); res["node"] != newOwner.Cfg.Node.Name {
		t.Fatalf("(c) delivered by %v, the page is on %s", res["node"], newOwner.Cfg.Node.Name)
	}
	msg = b.do(t, "waitMessage", map[string]any{"id": delivered["id"]})
	t.Logf("(c) /send on %s delivered on try %d, %s after the page's session was found; shown: %q", via.Cfg.Node.Name, tries, time.Since(sendAt).Round(time.Millisecond), msg["text"])
	// The re-joined room is routed to the new node: a publish through the
	// third node reaches the page.
	waitRoomOn(t, survivors, room, newOwner)
	published = via.PostJSON(t, "/publish", fmt.Sprintf(`{"room":%q,"data":{"text":"still here","step":"c after 1012"}}`, room))
	if published["delivered"] != 1.0 {
		t.Fatalf("(c) after 1012: publish to %s on %s: %v", room, via.Cfg.Node.Name, published)
	}
	rm = b.do(t, "waitRoomMessage", map[string]any{"id": published["id"]})
	if rm["room"] != room || !strings.Contains(fmt.Sprint(rm["text"]), "still here") {
		t.Fatalf("(c) after 1012: the page shows room message %s as %v in room %v", published["id"], rm["text"], rm["room"])
	}
	t.Logf("(c) after 1012: /publish to %s on %s shown as a room message", room, via.Cfg.Node.Name)
	shot2 := filepath.Join(shotDir, "demo-"+name+"-after-1012.png")
	b.do(t, "screenshot", map[string]any{"path": shot2})
	t.Logf("(c) screenshot: %s", shot2)
	b.do(t, "leaveRoom", map[string]any{"room": room})
	b.do(t, "waitRooms", map[string]any{"rooms": []string{}})
	waitRoomCount(t, survivors, room, 0)

	// (d) Tokens from a token endpoint, valid for 4 s: the client refreshes
	// them over the open socket. Without refreshes the server would close
	// the session with 4001 "token expired" 5 s (its leeway) after the
	// first token's exp; the page must still be on the same session well
	// past that, having reconnected never.
	const ttl = 4 * time.Second
	ts := startTokenServer(t, newOwner.Cfg.Auth.JWTSecret, "42", "web", ttl)
	b.drain()
	loadAt := time.Now()
	b.do(t, "goto", map[string]any{"url": query("token_url", ts.URL)})
	st = b.do(t, "waitState", map[string]any{"state": "open"})
	dOwner := sessionOwner(t, survivors)
	shows("(d)", shownNode(st), dOwner)
	st = b.do(t, "waitSession", map[string]any{"notSession": sessionC2})
	// The page may have fetched more than one token before it connected
	// (in "direct", its first node is the one (c) stopped).
	sessionD, firstExp := welcomed("(d)", st, dOwner, sessionC2, ts.tokens()...)
	b.waitEvent(t, "(d) the page to report its welcome", testsupport.WaitLimit, func(m map[string]any) bool {
		return pageKind(m) == "welcome" && m["session"] == sessionD
	})
	t.Logf("(d) open %s after the load began; session %s, its token expires %d (in %s)",
		time.Since(loadAt).Round(time.Millisecond), sessionD, firstExp, time.Until(time.Unix(firstExp, 0)).Round(time.Millisecond))
	// Past the first token's exp plus the server's leeway, and a second more.
	past := time.Unix(firstExp, 0).Add(session.Leeway + time.Second)
	refreshes := 0
	for done := false; !done; {
		ev := b.waitEvent(t, "(d) the page's token refreshes, past the first token's expiry", time.Until(past)+testsupport.WaitLimit, func(m map[string]any) bool {
			switch pageKind(m) {
			case "refreshed", "close", "open", "welcome", "error":
				return true
			}
			return false
		})
		switch pageKind(ev.m) {
		case "refreshed":
			refreshes++
			if ev.m["session"] != sessionD {
				t.Fatalf("(d) refreshed %s, want session %s", ev, sessionD)
			}
			exp, _ := ev.m["expires"].(float64)
			if time.Unix(int64(exp), 0).Before(ev.at) {
				t.Fatalf("(d) refreshed %s at %s: the new expiry is in the past", ev, ev.at.Format(time.RFC3339Nano))
			}
			done = ev.at.After(past)
		default:
			t.Fatalf("(d) the page reported %s while its token should be refreshed in place", ev)
		}
	}
	st = b.do(t, "snapshot", nil)
	if st["state"] != "open" || st["session"] != sessionD {
		t.Fatalf("(d) after %d refreshes the page shows state %v session %v, want open on %s", refreshes, st["state"], st["session"], sessionD)
	}
	if got, _ := st["refreshes"].(float64); int(got) != refreshes {
		t.Fatalf("(d) the page shows %v refreshes, it reported %d", st["refreshes"], refreshes)
	}
	if minted := len(ts.tokens()); minted < refreshes+1 {
		t.Fatalf("(d) the token endpoint minted %d tokens for 1 connection and %d refreshes", minted, refreshes)
	}
	if n := sessionOwner(t, survivors); n != dOwner {
		t.Fatalf("(d) the session moved from %s to %s", dOwner.Cfg.Node.Name, n.Cfg.Node.Name)
	}
	t.Logf("(d) %d refreshes of session %s on %s, %s after the load began, %s past the first token's exp; %d tokens minted",
		refreshes, sessionD, dOwner.Cfg.Node.Name, time.Since(loadAt).Round(time.Millisecond),
		time.Since(time.Unix(firstExp, 0)).Round(time.Millisecond), len(ts.tokens()))
	shot3 := filepath.Join(shotDir, "demo-"+name+"-refreshed.png")
	b.do(t, "screenshot", map[string]any{"path": shot3})
	t.Logf("(d) screenshot: %s", shot3)

	// (e) The backend disconnects that session by its id, through the other
	// node: the page shows "kicked" with the backend's reason, and its
	// client says no reconnect follows (4003).
	var kicker *nodetest.Node
	for _, n := range survivors {
		if n != dOwner {
			kicker = n
		}
	}
	b.drain()
	const reason = "signed out by the backend"
	code, out, _ := kicker.API(t, http.MethodPost, "/disconnect", fmt.Sprintf(`{"sessions":[%q],"reason":%q}`, sessionD, reason))
	if code != http.StatusOK || out["disconnected"] != 1.0 {
		t.Fatalf("(e) POST /disconnect session %s on %s: %d %v", sessionD, kicker.Cfg.Node.Name, code, out)
	}
	st = b.do(t, "waitState", map[string]any{"state": "kicked"})
	if !strings.Contains(fmt.Sprint(st["detail"]), reason) {
		t.Errorf("(e) the kicked page says %q, want the backend's reason %q", st["detail"], reason)
	}
	b.waitEvent(t, "(e) the page to report close 4003 without reconnect", testsupport.WaitLimit, func(m map[string]any) bool {
		return pageKind(m) == "close" && m["code"] == 4003.0 && m["reason"] == reason && m["reconnect"] == false
	})
	t.Logf("(e) /disconnect on %s: the page shows kicked: %q", kicker.Cfg.Node.Name, st["detail"])
	t.Logf("whole scenario, browser start included: %s", time.Since(start).Round(time.Millisecond))
}

// roomSources maps each room a waitRooms answer lists to who joined it
// ("client", "backend").
func roomSources(r map[string]any) map[string]any {
	out := map[string]any{}
	for _, x := range r["rooms"].([]any) {
		m := x.(map[string]any)
		out[fmt.Sprint(m["room"])] = m["source"]
	}
	return out
}

// waitRoomOn waits until every node in nodes counts one member of room,
// on node on: a publish through any of them then reaches it.
func waitRoomOn(t *testing.T, nodes []*nodetest.Node, room string, on *nodetest.Node) {
	t.Helper()
	want := fmt.Sprintf("[map[members:1 node:%s]]", on.Cfg.Node.Name)
	testsupport.WaitFor(t, fmt.Sprintf("every node to count one member of %s, on %s", room, on.Cfg.Node.Name), func() bool {
		for _, n := range nodes {
			if got, per := roomCount(t, n, room); got != 1 || per != want {
				return false
			}
		}
		return true
	})
}

// tokenExp returns a client token's exp claim (unix seconds), read without
// checking the signature: the test minted it.
func tokenExp(t *testing.T, tok string) int64 {
	t.Helper()
	exp, err := parseExp(tok)
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

func parseExp(tok string) (int64, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return 0, fmt.Errorf("token %q is not a JWT", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0, fmt.Errorf("token payload: %w", err)
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.Exp == 0 {
		return 0, fmt.Errorf("token payload %s: no exp (%v)", raw, err)
	}
	return c.Exp, nil
}

// tokenServer is a backend's token endpoint for the demo page's
// ?token_url=: each GET mints a fresh token (text/plain) for one user and
// device. CORS allows any origin: the page comes from a node or nginx.
type tokenServer struct {
	*httptest.Server
	mu     sync.Mutex
	minted []string
}

func startTokenServer(t *testing.T, secret, user, device string, ttl time.Duration) *tokenServer {
	t.Helper()
	auth, err := session.NewAuthenticator([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	ts := &tokenServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		tok, err := auth.Mint(user, device, ttl)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		ts.mu.Lock()
		ts.minted = append(ts.minted, tok)
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, tok)
	}))
	t.Cleanup(ts.Close)
	return ts
}

// tokens returns the tokens minted so far, oldest first.
func (ts *tokenServer) tokens() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.minted...)
}

// TestBrowserDemoMounted checks that a node serves the demo only as
// http.demo says (no browser needed).
func TestBrowserDemoMounted(t *testing.T) {
	for _, tc := range []struct {
		demo, listen string
		served       bool
	}{
		{"on", "127.0.0.1:0", true},
		{"auto", "127.0.0.1:0", true},
		{"off", "127.0.0.1:0", false},
	} {
		cfg := nodetest.Config(t)
		cfg.HTTP.Demo = tc.demo
		cfg.HTTP.Listen = tc.listen
		n := nodetest.Start(t, cfg)
		c := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for path, want := range map[string]int{"/demo/": 200, "/demo/wsmesh.js": 200, "/demo?token=x": 301, "/demo/nope": 404, "/": 302} {
			if !tc.served {
				want = 404
			}
			resp, err := c.Get("http://" + n.Addr() + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("http.demo %q: GET %s: %d, want %d", tc.demo, path, resp.StatusCode, want)
			}
			if want == 301 && resp.Header.Get("Location") != "/demo/?token=x" {
				t.Errorf("http.demo %q: GET %s: Location %q", tc.demo, path, resp.Header.Get("Location"))
			}
			if want == 302 && resp.Header.Get("Location") != "/demo/" { // GET / points a newcomer to the demo
				t.Errorf("http.demo %q: GET %s: Location %q, want /demo/", tc.demo, path, resp.Header.Get("Location"))
			}
		}
		n.Stop(t)
	}
}
