package cluster

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// TestLostAckRetransmitsSameBatch: when the ack of a batch is lost, its
// sender sends the same batch again (same link and seq) after
// CallTimeout, and the receiver acks the copy without applying it again;
// nothing is resynced (no snapshot sent again), and the delta it carried
// is applied once. A call in a batch whose ack is lost fails with
// ErrNoAnswer after CallTimeout, not later, and the link goes on.
func TestLostAckRetransmitsSameBatch(t *testing.T) {
	short := func(c *Config) { c.CallTimeout = 300 * time.Millisecond }
	a, _ := testCluster(t, "a", nil, nil, nil, short)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil, short)
	waitUntil(t, "a and b linked and synced", func() bool {
		okA, _ := a.Readiness()
		okB, _ := b.Readiness()
		return okA && okB
	})
	before, beforeB := a.Stats(), b.Stats()

	var lost atomic.Int32
	drop := func(m *ackMsg) bool { return m.From == "b" && lost.CompareAndSwap(0, 1) }
	a.dropAckForTest.Store(&drop)
	a.AddLocal(LocalSession{User: "u", Device: "web", Session: "s1", Stamp: a.Now()})
	waitUntil(t, "the copy acked", func() bool {
		return a.Stats().Retransmits > before.Retransmits && b.Stats().Duplicates > beforeB.Duplicates
	})
	waitUntil(t, "u routable on b", func() bool { return slices.Equal(b.Owners("u"), []string{"a"}) })
	after, afterB := a.Stats(), b.Stats()
	if got := after.Retransmits - before.Retransmits; got != 1 {
		t.Errorf("%d retransmits, want 1", got)
	}
	if got := afterB.Duplicates - beforeB.Duplicates; got != 1 {
		t.Errorf("b took %d copies, want 1", got)
	}
	if after.SnapshotsSent != before.SnapshotsSent {
		t.Errorf("a sent %d snapshots after a lost ack, want none", after.SnapshotsSent-before.SnapshotsSent)
	}
	if n := b.table.sessionsOf("a"); n != 1 {
		t.Errorf("b holds %d sessions of a, want 1", n)
	}

	// A call whose ack is lost.
	lost.Store(0)
	start := time.Now()
	_, err := a.Call(context.Background(), "b", []byte("x"))
	took := time.Since(start)
	if !errors.Is(err, ErrNoAnswer) || took > time.Second {
		t.Fatalf("call with its ack lost: %v after %s, want ErrNoAnswer after ~300ms", err, took)
	}
	if _, err := a.Call(context.Background(), "b", []byte("y")); err != nil {
		t.Fatalf("next call: %v", err)
	}
}
