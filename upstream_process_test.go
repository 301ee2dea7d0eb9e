package main

// Upstream against a real backend process (internal/testsupport/cmd/backend)
// and nodes run as processes: order across 5xx answers, timeouts and
// resets; answers that are garbage, redirects, too big or endless; a full
// queue; the backend down and back; a SIGKILLed node's disconnect events.

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
)

// TestUpstreamProcessOrderAcrossFailures: four clients send numbered
// messages while the backend answers 5xx, hangs past upstream.timeout
// (once after taking the batch: the retry is a repeat), or resets the
// connection. Every client gets an ack per message, in order, and no
// error; the backend, once it drops repeats by event id, has each
// session's connect and then every message once, in order.
func TestUpstreamProcessOrderAcrossFailures(t *testing.T) {
	be := startBackend(t, buildBackend(t))
	p := startUpstreamNode(t, "o1", upstreamTOML(be.url, `timeout = "300ms"
max_batch = 20
[session]
max_client_rate = 1000`))
	be.plan(t,
		step{Status: 503, Times: 1}, step{Times: 1},
		step{Hang: "1s", Times: 1}, step{Times: 1}, // taken, answer lost: the retry repeats it
		step{Reset: true, Times: 1}, step{Times: 1},
		step{Status: 500, Times: 2}, step{Times: 2},
		step{Hang: "1s", Status: 503, Times: 1}, step{Times: 1},
		step{Status: 502, Times: 1}, step{Times: 3},
		step{Hang: "1s", Times: 1},
	)
	const clients, perClient = 4, 100
	var cs []*testsupport.WSClient
	var sessions []string
	for i := range clients {
		c := p.api.Dial(t, p.api.Token(t, fmt.Sprintf("u%d", i), "web"), testsupport.DialOpts{})
		cs = append(cs, c)
		sessions = append(sessions, c.Session(t))
	}
	var sent []<-chan error
	for _, c := range cs {
		sent = append(sent, numbered(c, perClient, 10*time.Millisecond))
	}
	for i, c := range cs {
		acks, errs := answers(t, c, perClient, 3*testsupport.WaitLimit)
		if len(errs) > 0 {
			t.Fatalf("client %d: error frames %v", i, errs)
		}
		checkAcks(t, fmt.Sprintf("client %d", i), acks, perClient)
		if err := <-sent[i]; err != nil {
			t.Fatal(err)
		}
	}

	if st := be.stats(t); st.PlanLeft != 0 || st.BadSignatures != 0 {
		t.Fatalf("backend %+v: want its plan used up, no bad signature", st)
	}
	logs := bySession(t, be.events(t))
	dups := 0
	for i, s := range sessions {
		l := logs[s]
		if l == nil {
			t.Fatalf("backend got nothing of session %d (%s)", i, s)
		}
		lost, reordered, extra := lostAndReordered(l.seqs, perClient)
		if lost+reordered+extra > 0 || l.connectAt != 0 {
			t.Errorf("session %d: %d lost, %d reordered, %d extra, connect at %d (want 0, 0, 0, 0): %v", i, lost, reordered, extra, l.connectAt, l.seqs)
		}
		dups += l.duplicates
	}
	if dups == 0 {
		t.Errorf("no event came twice: the batches taken by a hanging answer were not retried?")
	}
	m := p.api.Metrics(t)
	if r := metricValue(m, "wsmesh_upstream_retries_total"); r < 8 {
		t.Errorf("wsmesh_upstream_retries_total %v, want at least the 8 failures planned", r)
	}
	if d := metricValue(m, `wsmesh_upstream_dropped_total{reason="queue_full"}`) + metricValue(m, `wsmesh_upstream_dropped_total{reason="unreachable"}`); d != 0 {
		t.Errorf("events dropped: %v", d)
	}
	t.Logf("%d clients × %d messages: %d POSTs, %d events repeated after an answer lost, %v retries",
		clients, perClient, be.stats(t).Posts, dups, metricValue(m, "wsmesh_upstream_retries_total"))
}

// TestUpstreamProcessOddAnswers: a 200 whose body is not JSON, a 302 (not
// followed, retried), a 200 with a body over 1 MiB, a 200 whose body
// trickles past upstream.timeout (1 s), replies to events not in the batch:
// each message is acked (the 2xx ones accepted as post.go says), the
// node logs why it ignored the answer, and meanwhile another client gets
// /send messages and pongs and /healthz answers.
func TestUpstreamProcessOddAnswers(t *testing.T) {
	be := startBackend(t, buildBackend(t))
	p := startUpstreamNode(t, "g1", upstreamTOML(be.url, `timeout = "1s"
events = ["message"]`))
	be.plan(t,
		step{Body: "this is not json", Times: 1},
		step{Status: 302, Times: 1},
		step{BodyBytes: 2 << 20, Times: 1},
		step{Drip: true, Times: 1},
		step{Body: `{"replies":[{"id":"not-in-batch","data":1}]}`, Times: 1},
		step{Replies: true},
	)
	a := p.api.Dial(t, p.api.Token(t, "a", "web"), testsupport.DialOpts{})
	b := p.api.Dial(t, p.api.Token(t, "b", "web"), testsupport.DialOpts{})
	a.Session(t)
	b.Session(t)
	stillServes := func(when string) {
		t.Helper()
		b.Write(t, `{"type":"ping"}`)
		if f := b.Next(t); f["type"] != "pong" {
			t.Fatalf("%s: b got %v, want pong", when, f)
		}
		out := p.api.Send(t, fmt.Sprintf(`{"users":["b"],"data":%q}`, when))
		if out["delivered"] != 1.0 {
			t.Fatalf("%s: /send to b: %v", when, out)
		}
		if f := b.Next(t); f["type"] != "message" || f["id"] != out["id"] {
			t.Fatalf("%s: b got %v, want message %v", when, f, out["id"])
		}
		if !p.healthy() {
			t.Fatalf("%s: /healthz does not answer 200", when)
		}
	}
	cases := []string{"garbage 200", "302 then over 1 MiB", "endless body", "replies to no event", "replies"}
	for i, name := range cases {
		start := time.Now()
		a.Write(t, fmt.Sprintf(`{"type":"message","id":"m%d","data":{"case":%q}}`, i, name))
		stillServes(name)
		acks, errs := answers(t, a, 1, testsupport.WaitLimit)
		if len(errs) > 0 || acks[0] != fmt.Sprintf("m%d", i) {
			t.Fatalf("%s: acks %v, errors %v; want ack m%d", name, acks, errs, i)
		}
		t.Logf("%s: acked in %s", name, time.Since(start).Round(time.Millisecond))
	}
	if f := a.Next(t); f["type"] != "reply" || f["id"] != "m4" || fmt.Sprint(f["data"]) != "map[echo:map[case:replies]]" {
		t.Fatalf("a got %v, want the reply to m4", f)
	}

	st := be.stats(t)
	if st.RedirectHits != 0 {
		t.Errorf("the 302 was followed %d times", st.RedirectHits)
	}
	posts := be.posts(t)
	if len(posts) != 6 || posts[1].Status != 302 || posts[2].Bytes != posts[1].Bytes || !posts[2].Accepted {
		t.Errorf("backend posts %+v: want 6, the second a 302 and the third the same batch again, accepted", posts)
	}
	m := p.api.Metrics(t)
	for line, want := range map[string]float64{
		"wsmesh_upstream_retries_total":                      1,
		`wsmesh_upstream_events_total{type="message"}`:       5,
		`wsmesh_upstream_dropped_total{reason="refused"}`:    0,
		`wsmesh_upstream_dropped_total{reason="queue_full"}`: 0,
	} {
		if got := metricValue(m, line); got != want {
			t.Errorf("%s = %v, want %v", line, got, want)
		}
	}
	lines, _ := p.readLog(t)
	warned := map[string]int{}
	for _, l := range lines {
		if l["level"] == "WARN" {
			warned[fmt.Sprint(l["msg"])]++
		}
	}
	for msg, want := range map[string]int{
		`backend's answer is not {"replies":[...]}: replies ignored`:                     1,
		"backend POST failed: retrying":                                                  1,
		"backend's answer unreadable or over 1 MiB: batch accepted, its replies ignored": 2,
		"backend replied to an event not in the batch, or without data: ignored":         1,
	} {
		if warned[msg] != want {
			t.Errorf("node logged %q %d times, want %d (warnings: %v)", msg, warned[msg], want, warned)
		}
	}
}

// TestUpstreamProcessQueueFull: with a small queue and the backend hanging,
// a client flooding messages gets an error frame for each one that finds
// the queue full, and keeps its connection; another client on the node
// still gets /send messages and pongs. Once the backend answers, every
// message taken is acked, in order, and the backend has exactly those.
func TestUpstreamProcessQueueFull(t *testing.T) {
	be := startBackend(t, buildBackend(t))
	p := startUpstreamNode(t, "q1", upstreamTOML(be.url, `timeout = "10s"
events = ["message"]
queue = 200
max_batch = 100
[session]
max_client_rate = 10000`))
	be.plan(t, step{Hang: "20s", Times: 1})
	t.Cleanup(func() { be.release(t) })
	other := p.api.Dial(t, p.api.Token(t, "other", "web"), testsupport.DialOpts{})
	other.Session(t)
	flood := p.api.Dial(t, p.api.Token(t, "flood", "web"), testsupport.DialOpts{})
	flood.Session(t)

	const n = 400
	sent := numbered(flood, n, 0)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// The first POST hangs: at most 100 events in it and 200 queued, so at
	// least 100 refusals come before any ack.
	_, errs := answers(t, flood, 100, testsupport.WaitLimit)
	for _, e := range errs {
		if !strings.HasPrefix(fmt.Sprint(e["reason"]), "backend queue full") {
			t.Fatalf("error frame %v, want backend queue full", e)
		}
	}
	testsupport.WaitFor(t, "the backend to hang on the first POST", func() bool { return be.stats(t).Hanging == 1 })
	for i := range 3 {
		other.Write(t, `{"type":"ping"}`)
		if f := other.Next(t); f["type"] != "pong" {
			t.Fatalf("other got %v, want pong", f)
		}
		out := p.api.Send(t, fmt.Sprintf(`{"users":["other"],"data":%d}`, i))
		if out["delivered"] != 1.0 {
			t.Fatalf("/send to other while the queue is full: %v", out)
		}
		if f := other.Next(t); f["id"] != out["id"] {
			t.Fatalf("other got %v, want message %v", f, out["id"])
		}
	}
	if !p.healthy() {
		t.Fatal("/healthz does not answer 200 while the queue is full")
	}
	depth := metricValue(p.api.Metrics(t), "wsmesh_upstream_queue")

	be.release(t)
	acks, more := answers(t, flood, n-len(errs), testsupport.WaitLimit)
	errs = append(errs, more...)
	refused := map[string]bool{}
	for _, e := range errs {
		if !strings.HasPrefix(fmt.Sprint(e["reason"]), "backend queue full") {
			t.Fatalf("error frame %v, want backend queue full", e)
		}
		refused[fmt.Sprint(e["id"])] = true
	}
	// Taken in order, each message acked or refused once. (Which are taken
	// depends on when the loop takes its first batch: the queue may fill
	// before it, lose up to 100 to it, and take later messages again.)
	last := -1
	for _, id := range acks {
		i, err := strconv.Atoi(strings.TrimPrefix(id, "c-"))
		if err != nil || i <= last || refused[id] {
			t.Fatalf("acks %v: want increasing ids, none also refused", acks)
		}
		last = i
	}
	if len(acks)+len(refused) != n {
		t.Fatalf("%d acked, %d refused, of %d", len(acks), len(refused), n)
	}
	if len(acks) < 200 || len(acks) > 300 {
		t.Errorf("%d messages taken, want the queue (200) and at most the first batch (100) more", len(acks))
	}
	l := bySession(t, be.events(t))[flood.Session(t)]
	if l == nil || len(l.seqs) != len(acks) || l.duplicates > 0 {
		t.Fatalf("backend got %+v, want the %d messages acked", l, len(acks))
	}
	for i, s := range l.seqs {
		if "c-"+strconv.Itoa(s) != acks[i] {
			t.Fatalf("backend got %v, want the messages acked (%v), in order", l.seqs, acks)
		}
	}
	m := p.api.Metrics(t)
	if d := metricValue(m, `wsmesh_upstream_dropped_total{reason="queue_full"}`); d != float64(len(errs)) {
		t.Errorf("queue_full drops %v, want %d", d, len(errs))
	}
	other.Write(t, `{"type":"ping"}`)
	if f := other.Next(t); f["type"] != "pong" {
		t.Fatalf("other got %v, want pong", f)
	}
	t.Logf("%d messages flooded: %d taken and acked, %d refused with an error frame; %v queued while the backend hung", n, len(acks), len(errs), depth)
}

var upstreamDown = flag.Duration("upstream-down", 3*time.Second, "how long TestUpstreamProcessBackendDown keeps the backend down")

// TestUpstreamProcessBackendDown: the backend's listener closes (nodes
// see connection refused) for a while inside upstream.retry_for, then
// comes back; three clients send numbered messages at a steady rate all
// along. Nothing is lost, nothing reordered per session, every message
// acked. The outage is 3 s; -args -upstream-down=30s runs the one in
// docs/benchmarks.md.
func TestUpstreamProcessBackendDown(t *testing.T) {
	down := *upstreamDown
	retryFor := max(10*time.Second, 2*down)
	be := startBackend(t, buildBackend(t))
	p := startUpstreamNode(t, "d1", upstreamTOML(be.url, fmt.Sprintf(`timeout = "300ms"
retry_for = %q`, retryFor)))
	const clients, rate = 3, 50 // messages per second per client
	before, after := 500*time.Millisecond, time.Second
	perClient := int((before + down + after).Seconds() * rate)
	var cs []*testsupport.WSClient
	var sessions []string
	for i := range clients {
		c := p.api.Dial(t, p.api.Token(t, fmt.Sprintf("u%d", i), "web"), testsupport.DialOpts{})
		cs = append(cs, c)
		sessions = append(sessions, c.Session(t))
	}
	var sent []<-chan error
	start := time.Now()
	for _, c := range cs {
		sent = append(sent, numbered(c, perClient, time.Second/rate))
	}
	// Let some go through, then down; acks are read after.
	testsupport.WaitFor(t, "the backend to take some messages", func() bool { return be.stats(t).AcceptedEvents > clients*10 })
	be.down(t, down)
	downAt := time.Now()
	testsupport.PollUntil(t, "the backend back up", down+testsupport.WaitLimit, func() bool { return !be.stats(t).Down })
	upAt := time.Now()
	for i, c := range cs {
		acks, errs := answers(t, c, perClient, down+3*testsupport.WaitLimit)
		if len(errs) > 0 {
			t.Fatalf("client %d: error frames %v", i, errs)
		}
		checkAcks(t, fmt.Sprintf("client %d", i), acks, perClient)
		if err := <-sent[i]; err != nil {
			t.Fatal(err)
		}
	}
	drained := time.Now()
	logs := bySession(t, be.events(t))
	var lost, reordered, extra, dups int
	for i, s := range sessions {
		l := logs[s]
		if l == nil {
			t.Fatalf("backend got nothing of session %d", i)
		}
		lo, re, ex := lostAndReordered(l.seqs, perClient)
		lost, reordered, extra, dups = lost+lo, reordered+re, extra+ex, dups+l.duplicates
	}
	m := p.api.Metrics(t)
	t.Logf("backend down %s (retry_for %s): %d clients × %d messages at %d/s; lost %d, reordered %d, extra %d, repeats dropped by id %d; "+
		"%v retries; all acked %s after the backend came back (%s after it went down, %s after the first message)",
		down, retryFor, clients, perClient, rate, lost, reordered, extra, dups, metricValue(m, "wsmesh_upstream_retries_total"),
		drained.Sub(upAt).Round(time.Millisecond), drained.Sub(downAt).Round(time.Millisecond), drained.Sub(start).Round(time.Millisecond))
	if lost+reordered+extra > 0 {
		t.Fatalf("lost %d, reordered %d, extra %d: want none", lost, reordered, extra)
	}
	if r := metricValue(m, "wsmesh_upstream_retries_total"); r < 1 {
		t.Errorf("no retry while the backend was down")
	}
}

// TestUpstreamProcessKilledNodeDisconnects: three node processes; clients
// on p3, which is SIGKILLed. Once both others declare it dead, the
// backend has exactly one disconnect event per p3 session (code 1006,
// reason "node p3 failed", id "<session>:disconnect", node "p3"), all sent
// by the same survivor: the one whose log says it reports them (the
// sender's process is found by the port of its connection to the
// backend). The survivors' own sessions get no disconnect.
func TestUpstreamProcessKilledNodeDisconnects(t *testing.T) {
	bin := buildBinary(t)
	be := startBackend(t, buildBackend(t))
	dir := t.TempDir()
	tables := upstreamTOML(be.url, `timeout = "2s"`)
	p1 := newUpstreamProcNode(t, dir, "p1", "", tables)
	p2 := newUpstreamProcNode(t, dir, "p2", p1.gossip, tables)
	p3 := newUpstreamProcNode(t, dir, "p3", p1.gossip, tables)
	procs := []*procNode{p1, p2, p3}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range procs {
				t.Log(p.logTail(40))
			}
		}
	})
	for _, p := range procs {
		p.start(t, bin)
	}
	for _, p := range procs {
		testsupport.PollUntil(t, p.name+" to see 3 alive members", 2*testsupport.WaitLimit, func() bool { return p.allAlive(t, "p1", "p2", "p3") })
	}

	const onVictim = 5
	victim := map[string]bool{}
	for i := range onVictim {
		c := p3.api.Dial(t, p3.api.Token(t, fmt.Sprintf("v%d", i), "web"), testsupport.DialOpts{})
		victim[c.Session(t)] = true
	}
	s1 := p1.api.Dial(t, p1.api.Token(t, "s1", "web"), testsupport.DialOpts{})
	s2 := p2.api.Dial(t, p2.api.Token(t, "s2", "web"), testsupport.DialOpts{})
	survivors := map[string]bool{s1.Session(t): true, s2.Session(t): true}
	for _, p := range []*procNode{p1, p2} {
		testsupport.PollUntil(t, p.name+" to know p3's sessions", testsupport.WaitLimit, func() bool { return p.members(t)["p3"]["sessions"] == float64(onVictim) })
	}
	testsupport.WaitFor(t, "the backend to get every connect event", func() bool {
		n := 0
		for _, e := range be.events(t) {
			if e.Type == "connect" && (victim[e.Session] || survivors[e.Session]) {
				n++
			}
		}
		return n == onVictim+2
	})

	p3.kill(t)
	killed := time.Now()
	// Both survivors decide (heir or not) and act before they log "member
	// failed".
	for _, p := range []*procNode{p1, p2} {
		testsupport.PollUntil(t, p.name+" to log p3 failed", 3*testsupport.WaitLimit, func() bool {
			lines, _ := p.readLog(t)
			for _, l := range lines {
				if l["msg"] == "member failed" && l["member"] == "p3" {
					return true
				}
			}
			return false
		})
	}
	t.Logf("both survivors declared p3 dead %s after SIGKILL", time.Since(killed).Round(time.Millisecond))
	// A message through each survivor, acked: whatever disconnect events
	// either had to send are sent (they go into a batch no later than one
	// queued after them).
	for i, c := range []*testsupport.WSClient{s1, s2} {
		c.Write(t, `{"type":"message","id":"after","data":"barrier"}`)
		if acks, errs := answers(t, c, 1, 2*testsupport.WaitLimit); len(errs) > 0 || acks[0] != "after" {
			t.Fatalf("survivor client %d: acks %v, errors %v", i, acks, errs)
		}
	}

	heir := ""
	for _, p := range []*procNode{p1, p2} {
		lines, _ := p.readLog(t)
		for _, l := range lines {
			if l["msg"] == "this node reports the failed member's sessions gone" && l["member"] == "p3" {
				if heir != "" {
					t.Fatalf("both %s and %s report p3's sessions", heir, p.name)
				}
				heir = p.name
				if l["sessions"] != float64(onVictim) {
					t.Errorf("%s reports %v sessions of p3, want %d", p.name, l["sessions"], onVictim)
				}
			}
		}
	}
	if heir == "" {
		t.Fatal("no survivor logged that it reports p3's sessions")
	}
	got := map[string]int{}
	for _, e := range be.events(t) {
		if e.Type != "disconnect" {
			continue
		}
		if survivors[e.Session] {
			t.Errorf("disconnect event of a survivor's session: %+v", e.backendEvent)
			continue
		}
		if !victim[e.Session] {
			continue
		}
		got[e.Session]++
		if e.ID != e.Session+":disconnect" || e.Code != 1006 || e.Reason != "node p3 failed" || e.Node != "p3" || e.DurationMS == nil {
			t.Errorf("disconnect event %+v: want id <session>:disconnect, code 1006, reason \"node p3 failed\", node p3", e.backendEvent)
		}
		_, port, err := net.SplitHostPort(e.Remote)
		if err != nil {
			t.Fatal(err)
		}
		if from := socketOwner(t, port, p1, p2); from != heir {
			t.Errorf("disconnect of %s came from %q (port %s), want %s, the heir", e.Session, from, port, heir)
		}
	}
	for s := range victim {
		if got[s] != 1 {
			t.Errorf("session %s of p3: %d disconnect events, want 1", s, got[s])
		}
	}
	t.Logf("%s, the heir, sent one disconnect per p3 session (%d)", heir, len(got))
}

// socketOwner returns the name of the process among procs that holds the
// TCP socket whose local port is port (a node's connection to the
// backend), from /proc/PID/fd and /proc/net/tcp; "" if none.
func socketOwner(t *testing.T, port string, procs ...*procNode) string {
	t.Helper()
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	hexPort := fmt.Sprintf(":%04X", p)
	var inodes []string // of sockets with local port port
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 9 && strings.HasSuffix(fields[1], hexPort) {
			inodes = append(inodes, fields[9])
		}
	}
	for _, pr := range procs {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pr.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pr.cmd.Process.Pid, fd.Name()))
			if err != nil {
				continue
			}
			for _, ino := range inodes {
				if link == "socket:["+ino+"]" {
					return pr.name
				}
			}
		}
	}
	return ""
}

// TestUpstreamProcessGiveUpAfterRetryFor: with the backend down for good,
// every client message gets its error frame once it has waited
// upstream.retry_for (plus at most one backoff, 5 s, and a timeout), not
// retry_for per batch queued ahead of it: DESIGN says the client gets an
// error frame when the backend "could not be reached for retry_for".
func TestUpstreamProcessGiveUpAfterRetryFor(t *testing.T) {
	be := startBackend(t, buildBackend(t))
	const retryFor, timeout = time.Second, 300 * time.Millisecond
	p := startUpstreamNode(t, "r1", upstreamTOML(be.url, fmt.Sprintf(`timeout = %q
retry_for = %q
max_batch = 2
events = ["message"]`, timeout, retryFor)))
	be.down(t, time.Minute)
	c := p.api.Dial(t, p.api.Token(t, "a", "web"), testsupport.DialOpts{})
	c.Session(t)
	const n = 20
	sentAt := time.Now()
	if err := <-numbered(c, n, 0); err != nil {
		t.Fatal(err)
	}
	bound := retryFor + 5*time.Second + timeout + time.Second // the last: slack for a loaded machine
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	var errs int
	for errs < n {
		select {
		case b := <-c.Frames:
			if !strings.Contains(string(b), `"type":"error"`) {
				t.Fatalf("frame %s, want an error frame", b)
			}
			if !strings.Contains(string(b), "backend unreachable for 1s") {
				t.Fatalf("error frame %s, want backend unreachable for 1s", b)
			}
			errs++
		case <-deadline.C:
			t.Fatalf("%d of %d messages answered %s after they were sent (backend down, retry_for %s): "+
				"the others are still retried, retry_for counting from when their batch was first tried, not from when they were queued",
				errs, n, bound, retryFor)
		}
	}
	t.Logf("%d messages, backend down: every error frame within %s", n, time.Since(sentAt).Round(time.Millisecond))
}
