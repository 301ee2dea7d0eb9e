package cluster

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// echoHandler replies to relay calls with "re:" + payload and records evictions.
type echoHandler struct {
	mu      sync.Mutex
	evicted []string
}

func (h *echoHandler) HandleRelay(from string, p []byte) []byte {
	return append([]byte("re:"+from+":"), p...)
}

func (h *echoHandler) Evict(user, session string) {
	h.mu.Lock()
	h.evicted = append(h.evicted, user+"/"+session)
	h.mu.Unlock()
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLinkKey is the LinkKey of the clusters tests build.
var testLinkKey = DeriveLinkKey([]byte("cluster-test-jwt-secret"))

// testCluster starts a node named name that joins seeds, with fast
// gossip timings, and has it leave when the test ends; opts change its
// Config first.
func testCluster(t *testing.T, name string, seeds []string, keys []string, log *syncBuffer, opts ...func(*Config)) (*Cluster, error) {
	t.Helper()
	var w interface{ Write([]byte) (int, error) } = log
	if log == nil {
		w = &syncBuffer{}
	}
	cfg := Config{
		NodeName:       name,
		Bind:           "127.0.0.1:0",
		Seeds:          seeds,
		SecretKeys:     keys,
		LinkKey:        testLinkKey,
		RejoinInterval: time.Hour,
		Logger:         slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Tune: func(mc *memberlist.Config) {
			mc.ProbeInterval = 100 * time.Millisecond
			mc.ProbeTimeout = 50 * time.Millisecond
			mc.GossipInterval = 20 * time.Millisecond
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(&echoHandler{}); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Leave(ctx)
	})
	return c, nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func hasPeer(c *Cluster, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers[name] != nil
}

func TestCallAndUnknownNode(t *testing.T) {
	a, err := testCluster(t, "a", nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a and b linked", func() bool { return hasPeer(a, "b") && hasPeer(b, "a") })
	for i := range 50 {
		got, err := a.Call(context.Background(), "b", []byte{byte(i)})
		if err != nil || !bytes.Equal(got, append([]byte("re:a:"), byte(i))) {
			t.Fatalf("call %d: %q %v", i, got, err)
		}
	}
	if _, err := a.Call(context.Background(), "nobody", nil); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("call to an unknown node: %v", err)
	}
}

func TestSessionTableGossip(t *testing.T) {
	a, _ := testCluster(t, "a", nil, nil, nil)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	// A session that exists before the link: it reaches b in a's snapshot.
	a.AddLocal(LocalSession{User: "u1", Device: "web", Session: "1", Stamp: a.Now()})
	waitUntil(t, "b routes u1 to a", func() bool { return strings.Join(b.Owners("u1"), ",") == "a" })
	// Deltas after the link.
	a.AddLocal(LocalSession{User: "u2", Device: "web", Session: "2", Stamp: a.Now()})
	a.RemoveLocal("u1", "1")
	waitUntil(t, "b sees the delta", func() bool { return len(b.Owners("u1")) == 0 && len(b.Owners("u2")) == 1 })
	if n := b.TableSize(); n != 1 {
		t.Fatalf("b's table holds %d sessions, want 1", n)
	}
	ms := b.Members()
	if len(ms) != 2 || ms[1].Name != "a" || ms[1].Sessions != 1 || ms[1].State != StateAlive {
		t.Fatalf("b's members: %+v", ms)
	}
}

func TestNewerLoginElsewhereEvicts(t *testing.T) {
	a, _ := testCluster(t, "a", nil, nil, nil)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	waitUntil(t, "linked", func() bool { return hasPeer(a, "b") && hasPeer(b, "a") })
	old := b.Now()
	b.AddLocal(LocalSession{User: "u", Device: "phone", Session: "old", Stamp: old})
	waitUntil(t, "a knows b's session", func() bool { return len(a.Owners("u")) == 1 })
	a.AddLocal(LocalSession{User: "u", Device: "phone", Session: "new", Stamp: a.Now()})
	bh := b.handler.(*echoHandler)
	waitUntil(t, "b evicts its older session", func() bool {
		bh.mu.Lock()
		defer bh.mu.Unlock()
		return slices.Contains(bh.evicted, "u/old")
	})
	// An older login arriving late loses at once on its own node.
	a.AddLocal(LocalSession{User: "u", Device: "phone", Session: "late", Stamp: old - 1})
	ah := a.handler.(*echoHandler)
	ah.mu.Lock()
	defer ah.mu.Unlock()
	if !slices.Contains(ah.evicted, "u/late") || slices.Contains(ah.evicted, "u/new") {
		t.Fatalf("a evicted %v, want the late, older login", ah.evicted)
	}
}

func TestWrongKeyCannotJoin(t *testing.T) {
	k1 := "AAAAAAAAAAAAAAAAAAAAAA=="
	k2 := "AQEBAQEBAQEBAQEBAQEBAQ=="
	a, _ := testCluster(t, "a", nil, []string{k1}, nil)
	var log syncBuffer
	b, err := testCluster(t, "b", []string{a.Addr()}, []string{k2}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.Members()); n != 1 {
		t.Fatalf("b joined with the wrong key: %d members", n)
	}
	if !strings.Contains(log.String(), "secret_keys") {
		t.Fatalf("log does not say why: %s", log.String())
	}
	// Rotation: c encrypts with a's key and also accepts a new one.
	c, err := testCluster(t, "c", []string{a.Addr()}, []string{k1, k2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "c joined a", func() bool { return hasPeer(a, "c") })
	_ = c
}

func TestDuplicateNameRefused(t *testing.T) {
	a, _ := testCluster(t, "a", nil, nil, nil)
	_, err := testCluster(t, "a", []string{a.Addr()}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "must be unique") {
		t.Fatalf("second live node named a: %v", err)
	}
}

func TestLeaveIsSeenAsLeft(t *testing.T) {
	a, _ := testCluster(t, "a", nil, nil, nil)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	waitUntil(t, "linked", func() bool { return hasPeer(a, "b") && hasPeer(b, "a") })
	b.AddLocal(LocalSession{User: "u", Device: "d", Session: "1", Stamp: b.Now()})
	waitUntil(t, "a knows b's session", func() bool { return len(a.Owners("u")) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a sees b left", func() bool {
		for _, m := range a.Members() {
			if m.Name == "b" {
				return m.State == StateLeft
			}
		}
		return false
	})
	if o := a.Owners("u"); len(o) != 0 {
		t.Fatalf("a still routes to b after it left: %v", o)
	}
	if err := b.Leave(ctx); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
}

func TestSelfAmongSeedsIsNotAnAnswer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := l.Addr().String()
	l.Close()
	var log syncBuffer
	// One seed list for every VM names this node too; the other seed is down.
	c, err := New(Config{NodeName: "solo", Bind: self, Seeds: []string{self, "127.0.0.1:1"}, LinkKey: testLinkKey, RejoinInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(&echoHandler{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Leave(context.Background()) })
	if !strings.Contains(log.String(), "no seed answered") {
		t.Fatalf("this node's own address counted as a seed that answered: %s", log.String())
	}
}
