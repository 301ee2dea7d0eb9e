package session

import (
	"fmt"
	"sync"
	"testing"
)

// connlessSession is a Session without a connection, registered by hand.
// It says a writer runs, so nothing starts one: what it is sent stays in
// its queue.
func connlessSession(h *Hub, user, device, id string) *Session {
	return &Session{hub: h, info: Info{Session: id, User: user, Device: device}, writing: true}
}

// connlessHub is a Hub for connless sessions (served, but nobody dials).
func connlessHub(t *testing.T, cfg Config) (*Hub, *logRecorder) {
	t.Helper()
	h, _, rec := testHub(t, cfg)
	return h, rec
}

// TestEvictCountsOnce: the cluster may tell the hub twice to evict one
// session (the delta and the direct evict of one newer login elsewhere,
// or a resend). The client gets the evicted frame and 4000 once, and the
// eviction is counted and logged once.
func TestEvictCountsOnce(t *testing.T) {
	h, srv, rec := testHub(t, Config{})
	c := dialRaw(t, srv, "twice", 0)
	waitFor(t, "the session", func() bool { return h.sessionForTest("twice") != nil })
	id := h.sessionForTest("twice").info.Session

	if !h.Evict("twice", id) {
		t.Fatal("first Evict found no session")
	}
	if h.Evict("twice", id) {
		t.Error("second Evict of the same session reported an eviction")
	}
	if op, p := c.read(); op != 0x1 || string(p) != string(frameEvicted) {
		t.Fatalf("got opcode %d %q, want the evicted frame", op, p)
	}
	if op, p := c.read(); op != 0x8 || closeCode(p) != CloseEvicted {
		t.Fatalf("got opcode %d %q, want close 4000", op, p)
	}
	if n := h.Stats().Evictions; n != 1 {
		t.Errorf("evictions counted %d, want 1", n)
	}
	if n := rec.count("INFO session evicted"); n != 1 {
		t.Errorf("%d \"session evicted\" lines, want 1", n)
	}
	if n := h.Len(); n != 0 {
		t.Errorf("Len %d after the eviction, want 0", n)
	}
	if ds := h.Deliver("twice", "", MessageFrame("m", []byte(`1`))); len(ds) != 0 {
		t.Errorf("Deliver reached the evicted session: %+v", ds)
	}
}

// TestEvictConcurrent: of concurrent Evicts of one session, one evicts.
func TestEvictConcurrent(t *testing.T) {
	h, rec := connlessHub(t, Config{})
	h.register(connlessSession(h, "u", "web", "1"))
	var wins sync.WaitGroup
	results := make(chan bool, 16)
	for range cap(results) {
		wins.Go(func() { results <- h.Evict("u", "1") })
	}
	wins.Wait()
	close(results)
	n := 0
	for ok := range results {
		if ok {
			n++
		}
	}
	if n != 1 || h.Stats().Evictions != 1 || rec.count("INFO session evicted") != 1 || h.Len() != 0 {
		t.Fatalf("%d Evicts reported one, %d counted, %d logged, Len %d; want 1, 1, 1, 0",
			n, h.Stats().Evictions, rec.count("INFO session evicted"), h.Len())
	}
}

// TestEvictClosingSession: a session closing for another reason is not
// evicted (nor counted) when the cluster's Evict comes.
func TestEvictClosingSession(t *testing.T) {
	h, rec := connlessHub(t, Config{})
	s := connlessSession(h, "u", "web", "1")
	h.register(s)
	s.Close(disconnectSlow)
	if h.Evict("u", "1") || h.Stats().Evictions != 0 || rec.count("INFO session evicted") != 0 {
		t.Fatal("a closing session was evicted")
	}
	if dc, _ := s.serverDisconnect(); dc != disconnectSlow {
		t.Fatalf("close %+v, want the slow-consumer close kept", dc)
	}
}

// TestLaterLoginWinsOnOneNode: logins of one user and device racing on
// one node leave the one registered last, which has the largest stamp;
// each other one is evicted, counted and logged once. (The cluster,
// which settles logins on different nodes by their stamps, agrees.)
func TestLaterLoginWinsOnOneNode(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprintf("single_device=%v", single), func(t *testing.T) {
			h, rec := connlessHub(t, Config{SingleDevice: single})
			const logins = 64
			sessions := make([]*Session, logins)
			var wg sync.WaitGroup
			for i := range sessions {
				device := "phone"
				if single {
					device = fmt.Sprint("dev", i%5)
				}
				sessions[i] = connlessSession(h, "racer", device, fmt.Sprint(i))
				wg.Go(func() { h.register(sessions[i]) })
			}
			wg.Wait()
			var newest *Session
			for _, s := range sessions {
				if newest == nil || s.info.Stamp > newest.info.Stamp {
					newest = s
				}
			}
			if got := h.sessionForTest("racer"); got != newest {
				t.Fatalf("survivor %+v, want the newest %+v", got, newest)
			}
			if n := h.Stats().Evictions; n != logins-1 {
				t.Fatalf("evictions %d, want %d", n, logins-1)
			}
			if n := rec.count("INFO session evicted"); n != logins-1 {
				t.Fatalf("%d \"session evicted\" lines, want %d", n, logins-1)
			}
			for _, s := range sessions {
				if dc, ok := s.serverDisconnect(); s != newest && (!ok || dc != disconnectEvicted) {
					t.Fatalf("session %s: close %+v, want 4000", s.info.Session, dc)
				}
			}
			if newest.PendingForTest() != 0 || h.Len() != 1 {
				t.Fatalf("the survivor was sent something, or Len %d", h.Len())
			}
		})
	}
}
