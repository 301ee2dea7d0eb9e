// Command backend is a webhook backend (upstream.url) for wsmesh's tests
// and benchmarks, run as its own process: it checks the signature of every
// batch of events a node POSTs, records the events it accepts, answers as
// it is told, and says what it got. Standard library only.
//
//	backend -secret S [-listen 127.0.0.1:0] [-control 127.0.0.1:0] [-keep=false]
//
// Once it serves it prints one JSON line on stdout:
// {"events":"<addr>","control":"<addr>"}. Nodes POST to any path of
// http://<events>/ (but /redirected, the target of its 3xx answers, which
// it counts and answers 404). It runs until killed.
//
// Each POST whose signature is good takes the first step of the plan
// (default: answer 200 at once, empty body). A step answers Times POSTs
// and is then dropped; Times 0 keeps it for every POST after. What a step
// does, in order: records the batch as accepted if Status is 2xx (before
// any Hang: a backend that processed a batch whose answer the node never
// saw); waits Hang (or until POST /release); closes the connection
// without an answer if Reset; else answers Status with Body, or with
// replies echoing each message's data if Replies, or with BodyBytes bytes
// of filler, or with a body that trickles a byte every 10 ms until the
// node hangs up if Drip.
//
// With -keep=false it counts the events it accepts but keeps none
// (benchmarks: GET /events then answers no events).
//
// A POST with a bad or missing signature or timestamp is answered 401 and
// counted; its events are not recorded.
//
// The control listener:
//
//	POST /plan     {"steps":[{...},...]}: replaces the plan
//	POST /release  ends every Hang and Drip now
//	POST /down     {"for":"3s"}: closes the events listener and its
//	               connections (nodes see connection refused), reopens it
//	               on the same address after that long
//	GET  /events?since=N  {"events":[{"post","at_ns","remote","event"}],"next":M}:
//	               the accepted events from the Nth (0-based), in arrival order
//	GET  /posts    {"posts":[...]}: every POST to the events listener
//	GET  /stats    totals
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// step is one answer of the plan.
type step struct {
	Status    int    `json:"status,omitempty"`     // default 200
	Body      string `json:"body,omitempty"`       // the answer's body
	Replies   bool   `json:"replies,omitempty"`    // 2xx: {"replies":[...]} echoing each message's data
	BodyBytes int    `json:"body_bytes,omitempty"` // answer this many bytes of filler
	Drip      bool   `json:"drip,omitempty"`       // trickle the body a byte per 10 ms until the node hangs up
	Hang      string `json:"hang,omitempty"`       // wait this long before answering (Go duration)
	Reset     bool   `json:"reset,omitempty"`      // close the connection without an answer
	Location  string `json:"location,omitempty"`   // 3xx: default /redirected
	Times     int    `json:"times,omitempty"`      // POSTs this step answers; 0: every one from now on

	hang time.Duration
}

// post is what the backend knows of one POST.
type post struct {
	N         int    `json:"n"` // from 1
	AtNS      int64  `json:"at_ns"`
	Remote    string `json:"remote"`
	Node      string `json:"node,omitempty"` // the Wsmesh-Node header, if any
	Events    int    `json:"events"`
	Bytes     int    `json:"bytes"`
	SigOK     bool   `json:"sig_ok"`
	Status    int    `json:"status"` // what it answered (0: reset)
	Accepted  bool   `json:"accepted"`
	Hang      string `json:"hang,omitempty"`
	Reset     bool   `json:"reset,omitempty"`
	Drip      bool   `json:"drip,omitempty"`
	BodyBytes int    `json:"body_bytes,omitempty"`
}

// got is an accepted event and the POST it came in.
type got struct {
	Post   int             `json:"post"`
	AtNS   int64           `json:"at_ns"`
	Remote string          `json:"remote"`
	Event  json.RawMessage `json:"event"`
}

type backend struct {
	secret []byte
	keep   bool // keep the accepted events (-keep)

	mu           sync.Mutex
	accepted     int // events accepted
	plan         []step
	posts        []post
	events       []got
	badSig       int
	redirectHits int
	hanging      int
	release      chan struct{} // closed by POST /release; then replaced

	// the events listener
	addr  string
	srv   *http.Server
	ln    net.Listener
	conns map[net.Conn]bool
	down  bool
}

func main() {
	secret := flag.String("secret", "", "upstream.secret of the nodes (required)")
	listen := flag.String("listen", "127.0.0.1:0", "address of the events listener")
	control := flag.String("control", "127.0.0.1:0", "address of the control listener")
	keep := flag.Bool("keep", true, "keep the accepted events for GET /events (false: only count them)")
	flag.Parse()
	if *secret == "" {
		log.Fatal("backend: -secret is required")
	}
	b := &backend{secret: []byte(*secret), keep: *keep, release: make(chan struct{}), conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("backend: %v", err)
	}
	b.addr = ln.Addr().String()
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serveEvents), ConnState: b.connState, ReadHeaderTimeout: 10 * time.Second}
	b.ln = ln
	go b.serve(b.srv, ln)

	cln, err := net.Listen("tcp", *control)
	if err != nil {
		log.Fatalf("backend: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /plan", b.handlePlan)
	mux.HandleFunc("POST /release", b.handleRelease)
	mux.HandleFunc("POST /down", b.handleDown)
	mux.HandleFunc("GET /events", b.handleEvents)
	mux.HandleFunc("GET /posts", b.handlePosts)
	mux.HandleFunc("GET /stats", b.handleStats)
	csrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	out, _ := json.Marshal(map[string]string{"events": b.addr, "control": cln.Addr().String()})
	fmt.Println(string(out))
	log.Fatal(csrv.Serve(cln))
}

// serve runs srv on ln until the listener is closed (by /down).
func (b *backend) serve(srv *http.Server, ln net.Listener) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		log.Printf("backend: events listener: %v", err)
	}
}

func (b *backend) connState(c net.Conn, st http.ConnState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch st {
	case http.StateNew:
		if b.down {
			c.Close()
			return
		}
		b.conns[c] = true
	case http.StateClosed, http.StateHijacked:
		delete(b.conns, c)
	}
}

// serveEvents handles a node's POST.
func (b *backend) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/redirected" {
		b.mu.Lock()
		b.redirectHits++
		b.mu.Unlock()
		http.Error(w, "a redirect was followed", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	at := time.Now().UnixNano()
	p := post{AtNS: at, Remote: r.RemoteAddr, Node: r.Header.Get("Wsmesh-Node"), Bytes: len(body)}
	ts := r.Header.Get("Wsmesh-Timestamp")
	sec, terr := strconv.ParseInt(ts, 10, 64)
	p.SigOK = r.Method == http.MethodPost && terr == nil && time.Since(time.Unix(sec, 0)).Abs() < 5*time.Minute &&
		hmac.Equal([]byte(r.Header.Get("Wsmesh-Signature")), []byte(sign(b.secret, ts, body)))
	var batch struct {
		Events []json.RawMessage `json:"events"`
	}
	if p.SigOK {
		if err := json.Unmarshal(body, &batch); err != nil {
			p.SigOK = false // a signed body that is not a batch: as bad
		}
	}
	p.Events = len(batch.Events)

	b.mu.Lock()
	p.N = len(b.posts) + 1
	if !p.SigOK {
		b.badSig++
		p.Status = http.StatusUnauthorized
		b.posts = append(b.posts, p)
		b.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	s := step{Status: http.StatusOK}
	if len(b.plan) > 0 {
		s = b.plan[0]
		if s.Times > 0 {
			b.plan[0].Times--
			if b.plan[0].Times == 0 {
				b.plan = b.plan[1:]
			}
		}
	}
	if s.Status == 0 {
		s.Status = http.StatusOK
	}
	p.Status, p.Hang, p.Reset, p.Drip, p.BodyBytes = s.Status, s.Hang, s.Reset, s.Drip, s.BodyBytes
	if s.Reset {
		p.Status = 0
	}
	p.Accepted = !s.Reset && s.Status/100 == 2
	if p.Accepted {
		b.accepted += len(batch.Events)
	}
	if p.Accepted && b.keep {
		for _, e := range batch.Events {
			b.events = append(b.events, got{Post: p.N, AtNS: at, Remote: r.RemoteAddr, Event: e})
		}
	}
	b.posts = append(b.posts, p)
	release := b.release
	b.mu.Unlock()

	if s.hang > 0 {
		b.mu.Lock()
		b.hanging++
		b.mu.Unlock()
		t := time.NewTimer(s.hang)
		select {
		case <-t.C:
		case <-release:
		}
		t.Stop()
		b.mu.Lock()
		b.hanging--
		b.mu.Unlock()
	}
	if s.Reset {
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
		return
	}
	if s.Status/100 == 3 {
		loc := s.Location
		if loc == "" {
			loc = "/redirected"
		}
		w.Header().Set("Location", loc)
	}
	switch {
	case s.Drip:
		drip(r.Context(), w, s.Status, release)
	case s.BodyBytes > 0:
		w.WriteHeader(s.Status)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for n := s.BodyBytes; n > 0; n -= len(chunk) {
			if _, err := w.Write(chunk[:min(n, len(chunk))]); err != nil {
				return
			}
		}
	case s.Replies && s.Status/100 == 2:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.Status)
		_, _ = w.Write(replies(batch.Events))
	default:
		w.WriteHeader(s.Status)
		_, _ = io.WriteString(w, s.Body)
	}
}

// drip answers status, then a byte every 10 ms until the node hangs up,
// /release, or a minute.
func drip(ctx context.Context, w http.ResponseWriter, status int, release <-chan struct{}) {
	rc := http.NewResponseController(w)
	w.WriteHeader(status)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.NewTimer(time.Minute)
	defer end.Stop()
	for {
		if _, err := w.Write([]byte{' '}); err != nil || rc.Flush() != nil {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		case <-release:
			return
		case <-end.C:
			return
		}
	}
}

// replies is {"replies":[{"id":<event id>,"data":{"echo":<data>}}]} for
// each message of events.
func replies(events []json.RawMessage) []byte {
	type reply struct {
		ID   string          `json:"id"`
		Data json.RawMessage `json:"data"`
	}
	out := struct {
		Replies []reply `json:"replies"`
	}{Replies: []reply{}}
	for _, raw := range events {
		var e struct {
			ID, Type string
			Data     json.RawMessage
		}
		if json.Unmarshal(raw, &e) != nil || e.Type != "message" {
			continue
		}
		echo, _ := json.Marshal(map[string]json.RawMessage{"echo": e.Data})
		out.Replies = append(out.Replies, reply{ID: e.ID, Data: echo})
	}
	b, _ := json.Marshal(out)
	return b
}

// sign is upstream.Sign, written out again: this program checks the
// scheme as documented, not the node's code.
func sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

func (b *backend) handlePlan(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Steps []step `json:"steps"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for i := range in.Steps {
		if in.Steps[i].Hang != "" {
			d, err := time.ParseDuration(in.Steps[i].Hang)
			if err != nil {
				http.Error(w, fmt.Sprintf("step %d: hang: %v", i, err), http.StatusBadRequest)
				return
			}
			in.Steps[i].hang = d
		}
	}
	b.mu.Lock()
	b.plan = in.Steps
	b.mu.Unlock()
	writeJSON(w, map[string]int{"steps": len(in.Steps)})
}

func (b *backend) handleRelease(w http.ResponseWriter, _ *http.Request) {
	b.mu.Lock()
	close(b.release)
	b.release = make(chan struct{})
	b.mu.Unlock()
	writeJSON(w, map[string]bool{"released": true})
}

func (b *backend) handleDown(w http.ResponseWriter, r *http.Request) {
	var in struct {
		For string `json:"for"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d, err := time.ParseDuration(in.For)
	if err != nil || d <= 0 {
		http.Error(w, "for: a positive duration", http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	if b.down {
		b.mu.Unlock()
		http.Error(w, "down already", http.StatusConflict)
		return
	}
	b.down = true
	ln := b.ln
	for c := range b.conns {
		c.Close()
	}
	clear(b.conns)
	b.mu.Unlock()
	ln.Close()
	time.AfterFunc(d, b.up)
	writeJSON(w, map[string]string{"down_for": d.String()})
}

// up reopens the events listener on its address after /down.
func (b *backend) up() {
	var ln net.Listener
	var err error
	for range 100 { // the old socket may linger a moment
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		log.Fatalf("backend: reopen %s: %v", b.addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(b.serveEvents), ConnState: b.connState, ReadHeaderTimeout: 10 * time.Second}
	b.mu.Lock()
	b.ln, b.srv, b.down = ln, srv, false
	b.mu.Unlock()
	go b.serve(srv, ln)
}

func (b *backend) handleEvents(w http.ResponseWriter, r *http.Request) {
	since, _ := strconv.Atoi(r.URL.Query().Get("since"))
	b.mu.Lock()
	since = min(max(since, 0), len(b.events))
	out := struct {
		Events []got `json:"events"`
		Next   int   `json:"next"`
	}{Events: append([]got{}, b.events[since:]...), Next: len(b.events)}
	b.mu.Unlock()
	writeJSON(w, out)
}

func (b *backend) handlePosts(w http.ResponseWriter, _ *http.Request) {
	b.mu.Lock()
	out := map[string][]post{"posts": append([]post{}, b.posts...)}
	b.mu.Unlock()
	writeJSON(w, out)
}

func (b *backend) handleStats(w http.ResponseWriter, _ *http.Request) {
	b.mu.Lock()
	out := map[string]any{
		"posts": len(b.posts), "accepted_events": b.accepted, "bad_signatures": b.badSig,
		"redirect_hits": b.redirectHits, "hanging": b.hanging, "down": b.down, "plan_left": len(b.plan),
	}
	b.mu.Unlock()
	writeJSON(w, out)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
