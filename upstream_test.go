package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wsmesh/config"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
	"wsmesh/upstream"
)

// backendEvent is an event as a backend gets it.
type backendEvent struct {
	ID, Type, Time, Node, User, Device, Session, Reason string
	ClientID                                            string          `json:"client_id"`
	Data                                                json.RawMessage `json:"data"`
	Code                                                int             `json:"code"`
	DurationMS                                          *int64          `json:"duration_ms"`
}

// fakeBackend is an HTTP backend for upstream.url that checks every
// POST's signature, records the events, and answers what answer says
// (default: 200 with a reply to each message).
type fakeBackend struct {
	t      *testing.T
	secret string
	mu     sync.Mutex
	events []backendEvent
	posts  int
	answer func(n int, events []backendEvent) (status int, body string) // n: this POST's number, from 1
	got    chan struct{}
}

func newFakeBackend(t *testing.T) (*fakeBackend, string) {
	b := &fakeBackend{t: t, secret: config.SampleUpstreamSecret, got: make(chan struct{}, 1)}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	return b, srv.URL + "/events"
}

func (b *fakeBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ts := r.Header.Get("Wsmesh-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		b.t.Errorf("Wsmesh-Timestamp %q: not within 5 minutes of now", ts)
	}
	if got, want := r.Header.Get("Wsmesh-Signature"), upstream.Sign([]byte(b.secret), ts, body); got != want {
		b.t.Errorf("Wsmesh-Signature %q, want %q", got, want)
	}
	var batch struct{ Events []backendEvent }
	if err := json.Unmarshal(body, &batch); err != nil {
		b.t.Errorf("body %q: %v", body, err)
	}
	b.mu.Lock()
	b.posts++
	n := b.posts
	answer := b.answer
	b.mu.Unlock()
	status, reply := 200, ""
	if answer != nil {
		status, reply = answer(n, batch.Events)
	} else {
		var replies []string
		for _, e := range batch.Events {
			if e.Type == "message" {
				replies = append(replies, fmt.Sprintf(`{"id":%q,"data":{"echo":%s}}`, e.ID, e.Data))
			}
		}
		reply = `{"replies":[` + strings.Join(replies, ",") + `]}`
	}
	if status/100 == 2 {
		b.mu.Lock()
		b.events = append(b.events, batch.Events...)
		b.mu.Unlock()
		select {
		case b.got <- struct{}{}:
		default:
		}
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, reply)
}

// eventsFor returns the accepted events of session sess, in order.
func (b *fakeBackend) eventsFor(sess string) []backendEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []backendEvent
	for _, e := range b.events {
		if e.Session == sess {
			out = append(out, e)
		}
	}
	return out
}

// TestUpstreamMessagesAndEvents: a client's messages reach the backend
// signed, with connect before them and disconnect after; the client gets
// an ack and the backend's reply for each; a message that is not JSON or
// has no data is answered with an error frame and not sent.
func TestUpstreamMessagesAndEvents(t *testing.T) {
	b, url := newFakeBackend(t)
	cfg := nodetest.Config(t)
	cfg.Upstream.URL = url
	cfg.Upstream.Secret = config.SampleUpstreamSecret
	n := nodetest.Start(t, cfg)
	c := n.Dial(t, n.Token(t, "a", "web"), testsupport.DialOpts{})
	sess := c.Session(t)

	for i := range 3 {
		c.Write(t, fmt.Sprintf(`{"type":"message","id":"c-%d","data":{"to":"b","n":%d}}`, i, i))
	}
	for i := range 3 {
		if f := c.Next(t); f["type"] != "ack" || f["id"] != fmt.Sprintf("c-%d", i) {
			t.Fatalf("frame %v, want ack c-%d", f, i)
		}
		if f := c.Next(t); f["type"] != "reply" || f["id"] != fmt.Sprintf("c-%d", i) || fmt.Sprint(f["data"]) != fmt.Sprintf("map[echo:map[n:%d to:b]]", i) {
			t.Fatalf("frame %v, want the reply to c-%d", f, i)
		}
	}
	for _, bad := range []struct{ frame, reason string }{
		{`{"type":"message","id":"x1"}`, "no data"},
		{`{"type":"message","id":"x2","data":null}`, "no data"},
	} {
		c.Write(t, bad.frame)
		if f := c.Next(t); f["type"] != "error" || f["op"] != "message" || !strings.Contains(fmt.Sprint(f["reason"]), bad.reason) {
			t.Fatalf("%s answered %v, want an error frame", bad.frame, f)
		}
	}
	c.Close()
	testsupport.WaitFor(t, "the disconnect event", func() bool {
		ev := b.eventsFor(sess)
		return len(ev) > 0 && ev[len(ev)-1].Type == "disconnect"
	})
	ev := b.eventsFor(sess)
	var kinds []string
	for _, e := range ev {
		kinds = append(kinds, e.Type)
		if e.Node != "t1" || e.User != "a" || e.Device != "web" || e.Session != sess || e.ID == "" {
			t.Errorf("event %+v", e)
		}
	}
	if got := strings.Join(kinds, ","); got != "connect,message,message,message,disconnect" {
		t.Fatalf("events %s, want connect, 3 messages, disconnect", got)
	}
	if ev[1].ClientID != "c-0" || string(ev[1].Data) != `{"to":"b","n":0}` {
		t.Errorf("first message event %+v", ev[1])
	}
	if d := ev[4]; d.Code != 1006 && d.Code != 1000 || d.DurationMS == nil || d.ID != sess+":disconnect" {
		t.Errorf("disconnect event %+v", d)
	}
	if m := n.Metrics(t); !strings.Contains(m, `wsmesh_upstream_events_total{type="message"} 3`) {
		t.Errorf("/metrics lacks 3 message events sent")
	}
}

// TestUpstreamRefusedAndDown: a 4xx answer refuses the batch (its clients
// get an error frame); 5xx answers are retried in order, then accepted.
func TestUpstreamRefusedAndDown(t *testing.T) {
	b, url := newFakeBackend(t)
	b.answer = func(n int, events []backendEvent) (int, string) {
		for _, e := range events {
			if e.Type == "message" && strings.Contains(string(e.Data), "forbidden") {
				return 403, `{"error":"no"}`
			}
		}
		if n <= 4 && len(events) > 0 && events[0].Type == "message" {
			return 503, "down"
		}
		return 200, ""
	}
	cfg := nodetest.Config(t)
	cfg.Upstream.URL = url
	cfg.Upstream.Secret = config.SampleUpstreamSecret
	cfg.Upstream.Events = []string{"message"}
	n := nodetest.Start(t, cfg)
	c := n.Dial(t, n.Token(t, "a", "web"), testsupport.DialOpts{})
	sess := c.Session(t)
	c.Write(t, `{"type":"message","id":"m1","data":"first"}`)
	if f := c.Next(t); f["type"] != "ack" || f["id"] != "m1" {
		t.Fatalf("after retries: %v, want ack m1", f)
	}
	c.Write(t, `{"type":"message","id":"m2","data":"forbidden"}`)
	if f := c.Next(t); f["type"] != "error" || f["op"] != "message" || f["id"] != "m2" || !strings.Contains(fmt.Sprint(f["reason"]), "403") {
		t.Fatalf("refused: %v, want an error frame naming 403", f)
	}
	if ev := b.eventsFor(sess); len(ev) != 1 || string(ev[0].Data) != `"first"` {
		t.Fatalf("backend accepted %+v, want only the first message", ev)
	}
	m := n.Metrics(t)
	for _, want := range []string{`wsmesh_upstream_dropped_total{reason="refused"} 1`, "wsmesh_upstream_retries_total 4"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestUpstreamOff: with no upstream.url a client message gets an error
// frame saying so, and the connection stays.
func TestUpstreamOff(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t))
	c := n.Dial(t, n.Token(t, "a", "web"), testsupport.DialOpts{})
	c.Write(t, `{"type":"message","id":"q","data":1}`)
	if f := c.Next(t); f["type"] != "error" || f["id"] != "q" || !strings.Contains(fmt.Sprint(f["reason"]), "upstream.url") {
		t.Fatalf("got %v", f)
	}
	c.Write(t, `{"type":"ping"}`)
	if f := c.Next(t); f["type"] != "pong" {
		t.Fatalf("got %v, want pong: the connection stays", f)
	}
}
