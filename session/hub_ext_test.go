package session_test

// Tests of the Hub through its public API only: a loopback httptest server
// in front of it, real WebSocket clients (testsupport.WSClient), and
// Deliver, Evict and Shutdown called as relay and the node call them.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/internal/testsupport"
	"wsmesh/session"
)

// testHub is a Hub served on a loopback httptest server, with a client
// that signs tokens the hub accepts.
type testHub struct {
	*session.Hub
	*testsupport.Client
}

// serveHub serves a Hub made with cfg (Auth and Logger filled in: the test
// secret, debug lines to t.Logf). When the test ends the hub shuts down,
// then the server closes.
func serveHub(t *testing.T, cfg session.Config) *testHub {
	t.Helper()
	auth, err := session.NewAuthenticator([]byte(testsupport.Secret))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Auth = auth
	cfg.Logger = slog.New(slog.NewTextHandler(testsupport.NewLogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := session.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testsupport.WaitLimit)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		srv.Close()
	})
	return &testHub{Hub: h, Client: testsupport.NewClient(srv.Listener.Addr().String(), testsupport.Secret, "")}
}

// deliver hands the hub a message frame for user's sessions (device "":
// all of them), as relay does, and returns what happened to each.
func (h *testHub) deliver(user, device, id, data string) []session.Delivery {
	return h.Deliver(user, device, session.MessageFrame(id, []byte(data)))
}

// delivered counts the sessions that took a frame (Err nil).
func delivered(ds []session.Delivery) int {
	n := 0
	for _, d := range ds {
		if d.Err == nil {
			n++
		}
	}
	return n
}

// TestDeliverKeepsOrder: frames handed to Deliver reach the client in the
// order given, ids and data intact, also when they come faster than the
// writer drains the queue.
func TestDeliverKeepsOrder(t *testing.T) {
	const n = 1000
	h := serveHub(t, session.Config{SendQueue: n})
	c := h.Dial(t, h.Token(t, "o", ""), testsupport.DialOpts{})
	c.Welcome(t) // written once the session is registered, and before any message: the queue is empty now
	for i := range n {
		if got := delivered(h.deliver("o", "", "m"+strconv.Itoa(i), strconv.Itoa(i))); got != 1 {
			t.Fatalf("deliver %d: %d sessions took it, want 1", i, got)
		}
	}
	for i := range n {
		if f := c.Next(t); f["type"] != "message" || f["data"] != float64(i) || f["id"] != "m"+strconv.Itoa(i) {
			t.Fatalf("frame %d: %v, want message m%d with data %d", i, f, i, i)
		}
	}
}

// TestDeliverDeviceFilter: Deliver with a device reaches only that
// device's session; without one, every session of the user.
func TestDeliverDeviceFilter(t *testing.T) {
	h := serveHub(t, session.Config{})
	web := h.Dial(t, h.Token(t, "7", "web"), testsupport.DialOpts{})
	app := h.Dial(t, h.Token(t, "7", "app"), testsupport.DialOpts{})
	testsupport.WaitFor(t, "two sessions", func() bool { return h.Len() == 2 })

	if ds := h.deliver("7", "app", "1", `"only app"`); len(ds) != 1 || ds[0].Device != "app" || ds[0].Err != nil {
		t.Fatalf("device filter: %+v", ds)
	}
	if f := app.Next(t); f["data"] != "only app" {
		t.Fatalf("app got %v", f)
	}
	if got := delivered(h.deliver("7", "", "2", `"both"`)); got != 2 {
		t.Fatalf("no filter: %d delivered, want 2", got)
	}
	if f := web.Next(t); f["data"] != "both" {
		t.Fatalf("web got %v first, want only the unfiltered message", f)
	}
	if f := app.Next(t); f["data"] != "both" {
		t.Fatalf("app got %v", f)
	}
	if ds := h.deliver("7", "tv", "3", `"x"`); len(ds) != 0 {
		t.Fatalf("no session on that device: %+v, want none", ds)
	}
}

func TestOriginCheckedBeforeUpgrade(t *testing.T) {
	h := serveHub(t, session.Config{AllowedOrigins: []string{"https://app.example"}})
	tok := h.Token(t, "u", "")

	_, resp, err := h.TryDial(tok, testsupport.DialOpts{Header: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bad origin: err %v, resp %v; want 403", err, resp)
	}
	h.Dial(t, tok, testsupport.DialOpts{Header: http.Header{"Origin": {"https://app.example"}}})
	testsupport.WaitFor(t, "allowed origin session", func() bool { return h.Len() == 1 })
}

// TestPingFrameAndUnknownFrames: a JSON ping is answered; a frame of an
// unknown type, and a binary frame, are ignored; a text frame that is not
// JSON gets an error frame.
func TestPingFrameAndUnknownFrames(t *testing.T) {
	h := serveHub(t, session.Config{})
	c := h.Dial(t, h.Token(t, "p", ""), testsupport.DialOpts{})
	c.Write(t, `{"type":"hello"}`)
	c.Write(t, `not json at all`)
	if err := c.Conn.WriteMessage(gws.OpcodeBinary, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	c.Write(t, `{"type":"ping"}`)
	// The frame that is not JSON is answered with what a message looks
	// like; the unknown type and the binary frame are ignored. The pong
	// may come first: control replies go before queued frames.
	var gotErr, gotPong bool
	for range 2 {
		switch f := c.Next(t); {
		case f["type"] == "error" && f["op"] == "message" && strings.Contains(fmt.Sprint(f["reason"]), "not a JSON object"):
			gotErr = true
		case f["type"] == "pong" && len(f) == 1:
			gotPong = true
		default:
			t.Fatalf("got %v, want an error frame for the frame that is not JSON and a pong, nothing else", f)
		}
	}
	if !gotErr || !gotPong {
		t.Fatalf("error frame %v, pong %v: want both once", gotErr, gotPong)
	}
}

func TestServerPingsAndIdleTimeout(t *testing.T) {
	h := serveHub(t, session.Config{
		PingInterval: 50 * time.Millisecond,
		IdleTimeout:  1500 * time.Millisecond, // room for a loaded CI machine
	})
	live := h.Dial(t, h.Token(t, "live", ""), testsupport.DialOpts{})
	silent := h.Dial(t, h.Token(t, "silent", ""), testsupport.DialOpts{Silent: true})

	for range 3 {
		select {
		case <-live.Pings:
		case <-time.After(testsupport.WaitLimit):
			t.Fatal("server sent no WebSocket ping")
		}
	}
	start := time.Now()
	silent.WaitClose(t)
	t.Logf("silent client closed after %s", time.Since(start))
	if live.IsClosed() {
		t.Fatalf("a client that answers pings was closed: %d %q", live.Code, live.Reason)
	}
	testsupport.WaitFor(t, "the server to drop the silent session", func() bool { return h.Len() == 1 })
	if got := delivered(h.deliver("live", "", "1", "1")); got != 1 {
		t.Fatalf("after idle timeout: %d delivered to live, want 1", got)
	}
	if ds := h.deliver("silent", "", "2", "1"); len(ds) != 0 {
		t.Fatalf("after idle timeout: %+v for silent, want no session (offline)", ds)
	}
}

// sessionID returns the id of user's only session, as Deliver reports it,
// by delivering it a frame: the client gets {"data":"probe"}.
func sessionID(t *testing.T, h *testHub, user string) string {
	t.Helper()
	ds := h.deliver(user, "", "probe", `"probe"`)
	if len(ds) != 1 || ds[0].Err != nil {
		t.Fatalf("%s: %+v, want one session", user, ds)
	}
	return ds[0].Session
}
