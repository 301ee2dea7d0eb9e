package cluster

// Benchmarks of a link between two nodes, all on 127.0.0.1. Run them with
//
//	go test -run '^$' -bench Link -benchtime=20000x ./cluster/
//
// BenchmarkLink/naive is what DESIGN.md §2 warns of: one memberlist
// SendReliable (a TCP connection) per message; BenchmarkLink/batched is
// this package's link: Call, batched, ordered and acknowledged.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"wsmesh/internal/counter"
	"wsmesh/internal/testsupport"
)

const (
	benchPayloadBytes = 200
	benchConcurrency  = 64
	benchDeadline     = 30 * time.Second // bounds every wait of these benchmarks
)

// benchDelegate is a memberlist.Delegate that counts user messages.
type benchDelegate struct{ msgs *counter.Counter }

func (d *benchDelegate) NodeMeta(int) []byte                 { return nil }
func (d *benchDelegate) NotifyMsg([]byte)                    { d.msgs.Add() }
func (d *benchDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (d *benchDelegate) LocalState(bool) []byte              { return nil }
func (d *benchDelegate) MergeRemoteState(buf []byte, _ bool) {}

// benchHandler is a Handler that counts relay payloads and answers
// each with a small reply.
type benchHandler struct{ n atomic.Int64 }

var benchReply = []byte("ok:delivered")

func (h *benchHandler) HandleRelay(string, []byte) []byte {
	h.n.Add(1)
	return benchReply
}
func (h *benchHandler) Evict(string, string) {}

// benchSenders calls send(i) for i in [0, n) from workers goroutines and
// returns how many calls failed.
func benchSenders(n, workers int, send func(i int) error) int64 {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if send(int(i)) != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return failed.Load()
}

// benchMemberlist starts a memberlist on 127.0.0.1 with a free port and
// shuts it down when the benchmark ends.
func benchMemberlist(b *testing.B, name string, d memberlist.Delegate) *memberlist.Memberlist {
	b.Helper()
	mc := memberlist.DefaultLocalConfig()
	mc.Name = name
	mc.BindAddr = "127.0.0.1"
	mc.BindPort = 0
	mc.EnableCompression = false
	mc.LogOutput = io.Discard
	mc.Delegate = d
	ml, err := memberlist.Create(mc)
	if err != nil {
		b.Fatalf("memberlist %s: %v", name, err)
	}
	b.Cleanup(func() {
		if err := ml.Shutdown(); err != nil {
			b.Errorf("memberlist %s shutdown: %v", name, err)
		}
	})
	return ml
}

// benchHasPeer reports whether c has a link to the member called name.
func benchHasPeer(c *Cluster, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers[name] != nil
}

// benchLinkPair starts two clusters ("a" and "b", b joining a) on 127.0.0.1
// with counting handlers, waits until each has a link to the other and
// the link answers, and has them leave when the benchmark ends.
func benchLinkPair(b *testing.B) (a, bb *Cluster, ha, hb *benchHandler) {
	b.Helper()
	discard := slog.New(slog.DiscardHandler)
	start := func(name string, seeds []string, h Handler) *Cluster {
		c, err := New(Config{NodeName: name, Bind: "127.0.0.1:0", Seeds: seeds, LinkKey: testLinkKey, Logger: discard})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(h); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Leave(ctx); err != nil {
				b.Errorf("%s leave: %v", name, err)
			}
		})
		return c
	}
	ha, hb = &benchHandler{}, &benchHandler{}
	a = start("a", nil, ha)
	bb = start("b", []string{a.Addr()}, hb)
	testsupport.PollUntil(b, "a and b to link", benchDeadline, func() bool { return benchHasPeer(a, "b") && benchHasPeer(bb, "a") })
	// The first batch on each link carries the snapshot exchange: get it
	// done before timing anything.
	testsupport.PollUntil(b, "a first call to b", benchDeadline, func() bool {
		_, err := a.Call(context.Background(), "b", []byte("warm-up"))
		return err == nil
	})
	return a, bb, ha, hb
}

// BenchmarkLink compares, from 64 concurrent senders, one memberlist
// SendReliable per message (naive: done once the receiver's NotifyMsg has
// seen every message sent without error) with Cluster.Call (batched: each
// call returns the receiver's reply), and the latency of Call from a
// single caller (batched/callers=1). The payload is 200 bytes. msgs/s
// counts messages delivered; errors counts sends or calls that failed.
func BenchmarkLink(b *testing.B) {
	payload := make([]byte, benchPayloadBytes)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}

	naive := func(senders int) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			msgs := counter.New()
			recv := benchMemberlist(b, "recv", &benchDelegate{msgs: msgs})
			send := benchMemberlist(b, "send", nil)
			if _, err := send.Join([]string{recv.LocalNode().Address()}); err != nil {
				b.Fatalf("join: %v", err)
			}
			var to *memberlist.Node
			for _, n := range send.Members() {
				if n.Name == "recv" {
					to = n
				}
			}
			if to == nil {
				b.Fatal("receiver not a member after join")
			}
			b.ResetTimer()
			start := time.Now()
			failed := benchSenders(b.N, senders, func(int) error { return send.SendReliable(to, payload) })
			ok := int64(b.N) - failed
			if !msgs.WaitFor(ok, benchDeadline) {
				b.Fatalf("receiver counted %d of %d messages sent without error within %s", msgs.Load(), ok, benchDeadline)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(ok)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(failed), "errors")
		}
	}

	batched := func(callers int) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			a, _, _, hb := benchLinkPair(b)
			base := hb.n.Load()
			var badReply atomic.Int64
			b.ResetTimer()
			start := time.Now()
			failed := benchSenders(b.N, callers, func(int) error {
				reply, err := a.Call(context.Background(), "b", payload)
				if err == nil && string(reply) != string(benchReply) {
					badReply.Add(1)
				}
				return err
			})
			elapsed := time.Since(start)
			b.StopTimer()
			ok := int64(b.N) - failed
			b.ReportMetric(float64(ok)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(failed), "errors")
			if callers == 1 {
				b.ReportMetric(float64(elapsed.Microseconds())/float64(b.N), "us/call")
			}
			if failed > 0 {
				b.Errorf("%d of %d calls failed", failed, b.N)
			}
			if n := badReply.Load(); n > 0 {
				b.Errorf("%d calls got a wrong reply", n)
			}
			if got := hb.n.Load() - base; got != ok {
				b.Errorf("receiver handled %d payloads, %d calls succeeded", got, ok)
			}
		}
	}
	// Side by side at each concurrency: a link's batches hold what its
	// callers have waiting, so batching pays more the more there are.
	for _, n := range []int{benchConcurrency, 256, 1024} {
		b.Run(fmt.Sprintf("senders=%d/naive", n), naive(n))
		b.Run(fmt.Sprintf("senders=%d/batched", n), batched(n))
	}
	b.Run("batched/callers=1", batched(1))
}

// BenchmarkTableOwners looks up a user's owner nodes in a table of 100k
// sessions over 4 nodes.
func BenchmarkTableOwners(b *testing.B) {
	tb := newTable("n0", false)
	tb.mu.Lock()
	for n := range 4 {
		node := fmt.Sprintf("n%d", n)
		o := tb.originLocked(node)
		for i := range 25000 {
			tb.addLocked(o, &Entry{User: fmt.Sprintf("u%d", n*25000+i), Device: "web", Session: fmt.Sprint(i), Node: node})
		}
	}
	tb.mu.Unlock()
	users := make([]string, 100000)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if len(tb.owners(users[i%len(users)])) != 1 {
			b.Fatal("no owner")
		}
		i++
	}
}

// BenchmarkBatchCodec encodes a batch of 64 relay items of 200 bytes as
// the sender does and decodes it as the receiver does.
func BenchmarkBatchCodec(b *testing.B) {
	payload := make([]byte, benchPayloadBytes)
	batch := &batchMsg{header: header{From: "node-1", Link: 1, Seq: 7}, Items: make([]item, 64)}
	for i := range batch.Items {
		batch.Items[i] = relayMsg{Payload: payload}.item()
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(batch.Items) * len(payload)))
	for b.Loop() {
		m, err := decodeBatch(batch.encode())
		if err != nil || len(m.Items) != len(batch.Items) {
			b.Fatal(err)
		}
		m.release()
	}
}
