package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/config"
	"wsmesh/session"
)

const (
	testSecret = "test-jwt-secret-0123456789-abcdefghijklmnop"
	testAPIKey = "test-api-key"
	waitLimit  = 10 * time.Second // upper bound for any awaited event
)

// testConfig is a fast single-node config on 127.0.0.1:0.
func testConfig(tb testing.TB) *config.Config {
	tb.Helper()
	c := config.Default()
	c.Node.Name = "t1"
	c.HTTP.Listen = "127.0.0.1:0"
	c.Cluster.Bind = "127.0.0.1:0"
	c.Auth.JWTSecret = testSecret
	c.Auth.APIKeys = []string{testAPIKey}
	c.Node.ShutdownTimeout = config.Duration(5 * time.Second)
	c.Log.Level = "debug"
	return &c
}

// testNode is a node running in this process.
type testNode struct {
	*node
	cfg    *config.Config
	cancel context.CancelFunc
	done   chan error // receives serve's result once
	once   sync.Once
}

// tlogWriter sends each log line to t.Logf until the test ends.
type tlogWriter struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (w *tlogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

// startNode runs serve with cfg and stops it when the test ends.
func startNode(tb testing.TB, cfg *config.Config) *testNode {
	tb.Helper()
	return startNodeHooks(tb, cfg, hooks{})
}

// startNodeHooks is startNode with test hooks.
func startNodeHooks(tb testing.TB, cfg *config.Config, h hooks) *testNode {
	tb.Helper()
	lw := &tlogWriter{tb: tb}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: level})).With("node", cfg.Node.Name)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *node, 1)
	h.ready = ready
	tn := &testNode{cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { tn.done <- serve(ctx, cfg, log, h) }()
	select {
	case tn.node = <-ready:
	case err := <-tn.done:
		cancel()
		tb.Fatalf("node did not start: %v", err)
	}
	tb.Cleanup(func() {
		tn.stop(tb)
		lw.mu.Lock()
		lw.done = true
		lw.mu.Unlock()
	})
	return tn
}

// stop shuts the node down (as SIGTERM would) and waits for serve to
// return. Safe to call twice.
func (tn *testNode) stop(tb testing.TB) {
	tn.once.Do(func() {
		tn.cancel()
		select {
		case err := <-tn.done:
			if err != nil {
				tb.Errorf("serve: %v", err)
			}
		case <-time.After(waitLimit):
			tb.Fatalf("node did not stop within %s", waitLimit)
		}
	})
}

func (tn *testNode) token(tb testing.TB, user, device string) string {
	tb.Helper()
	a, err := session.NewAuthenticator([]byte(tn.cfg.Auth.JWTSecret))
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := a.Mint(user, device, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// api does an HTTP request with the test API key and decodes the JSON answer.
func (tn *testNode) api(tb testing.TB, method, path, body string) (int, map[string]any, http.Header) {
	tb.Helper()
	return tn.apiKey(tb, method, path, body, "Bearer "+testAPIKey)
}

func (tn *testNode) apiKey(tb testing.TB, method, path, body, auth string) (int, map[string]any, http.Header) {
	tb.Helper()
	req, err := http.NewRequest(method, "http://"+tn.Addr()+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if method != http.MethodHead {
		if err := json.Unmarshal(raw, &out); err != nil {
			tb.Fatalf("%s %s: answer is not JSON (%v): %q", method, path, err, raw)
		}
	}
	return resp.StatusCode, out, resp.Header
}

// metrics returns the node's /metrics page.
func (tn *testNode) metrics(tb testing.TB) string {
	tb.Helper()
	req, _ := http.NewRequest("GET", "http://"+tn.Addr()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// send posts to /send and checks for 200.
func (tn *testNode) send(tb testing.TB, body string) map[string]any {
	tb.Helper()
	code, out, _ := tn.api(tb, http.MethodPost, "/send", body)
	if code != http.StatusOK {
		tb.Fatalf("POST /send %s: status %d: %v", body, code, out)
	}
	return out
}

// wsClient is a real WebSocket client (gws) that records what it gets.
type wsClient struct {
	conn    *gws.Conn
	frames  chan []byte
	pings   chan struct{}
	closed  chan struct{}
	silent  bool // do not answer server pings
	code    uint16
	reason  string
	started bool
}

type dialOpts struct {
	header  http.Header
	silent  bool
	noRead  bool // do not start the read loop (a client that stops reading)
	rcvBuf  int  // SO_RCVBUF for the client socket, if not 0
	noToken bool
}

func (tn *testNode) dial(tb testing.TB, token string, o dialOpts) *wsClient {
	tb.Helper()
	c, resp, err := tn.tryDial(token, o)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial: %v (status %d)", err, status)
	}
	tb.Cleanup(func() { c.close() })
	return c
}

func (tn *testNode) tryDial(token string, o dialOpts) (*wsClient, *http.Response, error) {
	c := &wsClient{frames: make(chan []byte, 4096), pings: make(chan struct{}, 64), closed: make(chan struct{}), silent: o.silent}
	d := net.Dialer{Timeout: 5 * time.Second}
	if o.rcvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.rcvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	nc, err := d.Dial("tcp", tn.Addr())
	if err != nil {
		return nil, nil, err
	}
	url := "ws://" + tn.Addr() + "/ws"
	if !o.noToken {
		url += "?token=" + token
	}
	conn, resp, err := gws.NewClientFromConn(c, &gws.ClientOption{Addr: url, RequestHeader: o.header}, nc)
	if err != nil {
		return nil, resp, err
	}
	c.conn = conn
	if !o.noRead {
		c.startReading()
	}
	return c, resp, nil
}

func (c *wsClient) startReading() {
	c.started = true
	go c.conn.ReadLoop()
}

func (c *wsClient) close() {
	_ = c.conn.NetConn().Close()
	if c.started {
		<-c.closed
	}
}

func (c *wsClient) OnOpen(*gws.Conn) {}
func (c *wsClient) OnClose(_ *gws.Conn, err error) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		c.code, c.reason = ce.Code, string(ce.Reason)
	}
	close(c.closed)
}
func (c *wsClient) OnPing(conn *gws.Conn, _ []byte) {
	select {
	case c.pings <- struct{}{}:
	default:
	}
	if !c.silent {
		_ = conn.WritePong(nil)
	}
}
func (c *wsClient) OnPong(*gws.Conn, []byte) {}
func (c *wsClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	b := bytes.Clone(m.Bytes())
	m.Close()
	c.frames <- b
}

// next waits for the next frame and decodes it. Frames that arrived before
// a close are returned before the close is reported.
func (c *wsClient) next(tb testing.TB) map[string]any {
	tb.Helper()
	decode := func(b []byte) map[string]any {
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			tb.Fatalf("frame is not JSON: %q", b)
		}
		return f
	}
	select {
	case b := <-c.frames:
		return decode(b)
	case <-c.closed:
		select {
		case b := <-c.frames:
			return decode(b)
		default:
		}
		tb.Fatalf("connection closed (code %d, %q) while waiting for a frame", c.code, c.reason)
	case <-time.After(waitLimit):
		tb.Fatalf("no frame within %s", waitLimit)
	}
	return nil
}

// waitClose waits for the server to close and returns its code and reason.
func (c *wsClient) waitClose(tb testing.TB) (uint16, string) {
	tb.Helper()
	select {
	case <-c.closed:
		return c.code, c.reason
	case <-time.After(waitLimit):
		tb.Fatalf("not closed within %s", waitLimit)
	}
	return 0, ""
}

func (c *wsClient) write(tb testing.TB, s string) {
	tb.Helper()
	if err := c.conn.WriteString(s); err != nil {
		tb.Fatalf("client write: %v", err)
	}
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	pollUntil(tb, what, waitLimit, cond)
}

// pollUntil polls cond every 5ms until it holds, failing the test after
// limit; it returns how long that took.
func pollUntil(tb testing.TB, what string, limit time.Duration, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			tb.Fatalf("timed out after %s waiting for %s", limit, what)
		}
	}
	return time.Since(start)
}

// fixedAddr is a stand-in listener that only reports an address, for
// driving a node that runs in another process.
type fixedAddr string

func (a fixedAddr) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (a fixedAddr) Close() error              { return nil }
func (a fixedAddr) Addr() net.Addr            { return addrString(a) }

type addrString string

func (a addrString) Network() string { return "tcp" }
func (a addrString) String() string  { return string(a) }

// requireTool returns the path of a program a test drives for real (nginx,
// chromium, ip, systemd-analyze). Missing, it fails the test on CI (where
// .ci/run installs it) and skips it elsewhere, saying how to install it.
func requireTool(tb testing.TB, name, debianPackage string) string {
	tb.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := fmt.Sprintf("%s not installed (apt-get install %s; .ci/run installs it)", name, debianPackage)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}
