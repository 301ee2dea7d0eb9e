package cluster_test

// Link identity: a link message is taken only from the member memberlist
// knows by the sender's name, with the boot epoch in its meta.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"log/slog"
	"math"
	"testing"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/faultnet"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/wire"
)

// sealedBatch is a link batch with a valid MAC for node to, claiming to
// come from node from with boot epoch epoch, on link id link, sequence 1,
// asking for a snapshot: what a second process started with from's
// node.name (same config, same LinkKey, its own epoch) sends.
func sealedBatch(to, from string, epoch, link uint64) []byte {
	b := []byte{1} // msgBatch
	b = wire.AppendString(b, from)
	b = wire.AppendUvarint(b, link)
	b = wire.AppendUvarint(b, 1)
	b = wire.AppendUvarint(b, 1)            // one item:
	b = wire.AppendBytes(append(b, 3), nil) // a snapshot request
	b = wire.AppendUvarint(b, epoch)
	h := hmac.New(sha256.New, cluster.DeriveLinkKey([]byte(testsupport.Secret)))
	h.Write(wire.AppendString(nil, to))
	h.Write(b)
	return append(b, h.Sum(nil)[:16]...)
}

// everyPairCalls checks that every node of nodes gets a call through to
// every other within 5 s.
func everyPairCalls(t *testing.T, nodes []*node, payload string) {
	t.Helper()
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			var err error
			var reply []byte
			start := time.Now()
			for time.Since(start) < 5*time.Second {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				reply, err = a.Call(ctx, b.Name(), []byte(payload))
				cancel()
				if err == nil {
					break
				}
			}
			if err != nil || string(reply) != "ok:"+payload {
				t.Fatalf("%s -> %s: no call through within 5s: %q, %v", a.Name(), b.Name(), reply, err)
			}
			t.Logf("%s -> %s: call through after %s", a.Name(), b.Name(), time.Since(start).Round(time.Millisecond))
		}
	}
}

// TestDuplicateNameLeavesLinksAlone: with t1, t2 and t3 running, a fourth
// process started with node.name t1 (its own epoch) fails to start, and
// afterwards every pair of the three real nodes still gets calls through
// within 5 s (the first release left t1's links dead for minutes: peers
// took the newer link id of the duplicate's and dropped t1's batches).
// Then a batch such a duplicate sends, with a valid MAC and a larger link
// id than any, is refused, counted and logged with what it claimed, and
// changes nothing for the real t1.
func TestDuplicateNameLeavesLinksAlone(t *testing.T) {
	tap := &logTap{TB: t}
	nodes, _ := startCluster(tap, 3, 11)
	t1, t2, t3 := nodes[0], nodes[1], nodes[2]
	everyPairCalls(t, nodes, "before")

	dup, err := cluster.New(cluster.Config{
		NodeName: "t1",
		Bind:     "127.0.0.1:0",
		Seeds:    []string{t2.Addr(), t3.Addr()},
		LinkKey:  cluster.DeriveLinkKey([]byte(testsupport.Secret)),
		Logger:   slog.New(slog.NewTextHandler(testsupport.NewLogWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", "t1-duplicate"),
		Tune:     faultnet.FastGossip,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dup.Start(&relayLog{}); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = dup.Leave(ctx)
		cancel()
		t.Fatal("a second node named t1 started")
	} else {
		t.Logf("duplicate refused to start: %v", err)
	}
	everyPairCalls(t, nodes, "after duplicate")

	// What a duplicate that did not notice the conflict in time sends.
	before := t2.Stats().IdentityRefused
	forgeTCP(t, t2.Addr(), sealedBatch("t2", "t1", 42, math.MaxUint64))
	testsupport.PollUntil(t, "t2 to refuse and log the batch of the other t1", 5*time.Second, func() bool {
		return t2.Stats().IdentityRefused > before &&
			tap.has("node=t2", "level=WARN", "link message refused", "claimed_from=t1", "claimed_epoch=42")
	})
	everyPairCalls(t, nodes, "after impostor")
	connect(t1, "u1")
	testsupport.PollUntil(t, "t2 and t3 to route u1 to t1", 5*time.Second, func() bool {
		for _, n := range []*node{t2, t3} {
			if o := n.Owners("u1"); len(o) != 1 || o[0] != "t1" {
				return false
			}
		}
		return true
	})
}
