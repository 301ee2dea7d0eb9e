package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"wsmesh/session"
)

var testSecret = []byte("upstream-unit-test-secret-0123456789abcdef")

// recorder is a backend that checks signatures and keeps the events of
// the batches it accepts; gate, if set, holds each POST until it is
// closed.
type recorder struct {
	t      *testing.T
	mu     sync.Mutex
	events []wireEvent
	gate   chan struct{}
	got    chan struct{} // a value per accepted POST while there is room
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.gate != nil {
		<-r.gate
	}
	body, _ := io.ReadAll(req.Body)
	if got, want := req.Header.Get("Wsmesh-Signature"), Sign(testSecret, req.Header.Get("Wsmesh-Timestamp"), body); got != want {
		r.t.Errorf("signature %q, want %q", got, want)
	}
	var b struct{ Events []wireEvent }
	if err := json.Unmarshal(body, &b); err != nil {
		r.t.Errorf("body %q: %v", body, err)
	}
	r.mu.Lock()
	r.events = append(r.events, b.Events...)
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
}

func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = e.Type + ":" + e.User
	}
	return out
}

// delivered records the frames a Sender hands back to clients.
type delivered struct {
	mu     sync.Mutex
	frames []string
}

func (d *delivered) deliver(user, sess string, frame []byte) {
	d.mu.Lock()
	d.frames = append(d.frames, user+" "+string(frame))
	d.mu.Unlock()
}

func newSender(t *testing.T, url string, d *delivered, queue int) *Sender {
	t.Helper()
	s, err := New(Config{URL: url, Secret: testSecret, Queue: queue, MaxBatch: 2, Node: "n1", Deliver: d.deliver,
		RetryFor: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func info(user string) session.Info {
	return session.Info{User: user, Device: "web", Session: "s-" + user, Connected: time.Now()}
}

// TestConfigRefused: a URL that is not http(s), a short secret, an
// unknown event type, and no Deliver are refused by New.
func TestConfigRefused(t *testing.T) {
	ok := Config{URL: "http://127.0.0.1:1/e", Secret: testSecret, Deliver: func(string, string, []byte) {}}
	for name, bad := range map[string]func(c *Config){
		"ftp url":      func(c *Config) { c.URL = "ftp://x/y" },
		"no host":      func(c *Config) { c.URL = "http:///path" },
		"short secret": func(c *Config) { c.Secret = []byte("short") },
		"event type":   func(c *Config) { c.Events = []string{"message", "typing"} },
		"no deliver":   func(c *Config) { c.Deliver = nil },
	} {
		c := ok
		bad(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(ok); err != nil {
		t.Fatalf("a good config: %v", err)
	}
}

// TestQueueFullThenDrained: with the backend holding its answer, a full
// queue refuses a message with ErrQueueFull (drops a connect, counted),
// and once the backend answers, everything queued goes out in order, a
// failed node's disconnects after it, and the clients get their acks.
func TestQueueFullThenDrained(t *testing.T) {
	rec := &recorder{t: t, gate: make(chan struct{}), got: make(chan struct{}, 100)}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	var d delivered
	s := newSender(t, srv.URL, &d, 4)
	s.Start()
	// The loop takes a and waits on the backend; 4 more fill the queue.
	if err := s.Message(info("a"), "c-a", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first batch taken", func() bool { return s.Stats().QueueDepth == 0 })
	for _, u := range []string{"b", "c", "d", "e"} {
		if err := s.Message(info(u), "c-"+u, []byte(`1`)); err != nil {
			t.Fatalf("message %s: %v", u, err)
		}
	}
	if err := s.Message(info("g"), "c-g", []byte(`1`)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("message into a full queue: %v, want ErrQueueFull", err)
	}
	s.Connected(info("h")) // dropped, counted
	s.NodeFailed("n9", []Gone{{User: "x", Device: "web", Session: "s-x"}, {User: "y", Device: "web", Session: "s-y"}})
	close(rec.gate)
	waitFor(t, "every event at the backend", func() bool { return len(rec.ids()) == 7 })
	want := "message:a,message:b,message:c,message:d,message:e,disconnect:x,disconnect:y"
	if got := strings.Join(rec.ids(), ","); got != want {
		t.Fatalf("backend got %s, want %s", got, want)
	}
	waitFor(t, "the sender to count the last answer", func() bool { return s.Stats().Sent[TypeDisconnect] == 2 })
	st := s.Stats()
	if st.Dropped["queue_full"] != 2 || st.Sent[TypeMessage] != 5 || st.Sent[TypeDisconnect] != 2 {
		t.Fatalf("stats %+v", st)
	}
	rec.mu.Lock()
	last := rec.events[6]
	rec.mu.Unlock()
	if last.ID != "s-y:disconnect" || last.Node != "n9" || last.Code != 1006 || last.Reason != "node n9 failed" {
		t.Fatalf("a failed node's disconnect: %+v", last)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.frames) != 5 || d.frames[0] != `a {"type":"ack","id":"c-a"}` {
		t.Fatalf("frames to clients %q, want 5 acks, a's first", d.frames)
	}
	if err := s.Message(info("z"), "", []byte(`1`)); !errors.Is(err, ErrClosed) {
		t.Fatalf("message after Close: %v, want ErrClosed", err)
	}
}

// TestCloseGivesUp: Close with the backend down returns when its context
// ends, drops what is left, and counts it.
func TestCloseGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }))
	defer srv.Close()
	var d delivered
	s := newSender(t, srv.URL, &d, 10)
	s.Start()
	for _, u := range []string{"a", "b", "c"} {
		if err := s.Message(info(u), "", []byte(`1`)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want the context's deadline", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %s", took)
	}
	if st := s.Stats(); st.Dropped["shutdown"] != 3 || st.Retried == 0 {
		t.Fatalf("stats %+v, want 3 dropped at shutdown after retries", st)
	}
}

// TestSignKnownValue pins the signature scheme against a value computed
// independently (python3: hmac.new(b"k"*32, b"1700000000.{}", sha256)).
func TestSignKnownValue(t *testing.T) {
	got := Sign([]byte(strings.Repeat("k", 32)), "1700000000", []byte("{}"))
	if want := "v1=0b3b35525c10b3757ffa78df69037021fc3168d8390a51a4fcb4a8d56a25b557"; got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
