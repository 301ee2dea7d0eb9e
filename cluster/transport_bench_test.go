package cluster_test

// What the multiplexed transport is for (DESIGN.md §2, "Measured on the
// first release"): sockets left in TIME_WAIT by steady cross-node traffic.
// Run it with
//
//	go test -run '^$' -bench TimeWait -benchtime=1x ./cluster/ [-timewait.for=20s]
//
// Each sub-benchmark starts 3 nodes, makes -timewait.rate calls a second
// between them (round robin over the 6 directed pairs) for -timewait.for,
// then counts the sockets in TIME_WAIT on the nodes' gossip ports (read
// from /proc/net/tcp): memberlist's own transport (plain) beside muxnet
// (mux), in one run. Ports differ, so each counts only its own.

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/clustertest"
)

var (
	timeWaitFor  = flag.Duration("timewait.for", 10*time.Second, "BenchmarkTimeWait: how long to call")
	timeWaitRate = flag.Int("timewait.rate", 1000, "BenchmarkTimeWait: cross-node calls a second")
)

func BenchmarkTimeWait(b *testing.B) {
	for _, tc := range []struct {
		name  string
		plain bool
	}{{"transport=plain", true}, {"transport=mux", false}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				benchTimeWait(b, tc.plain)
			}
		})
	}
}

func benchTimeWait(b *testing.B, plain bool) {
	var nodes []*cluster.Cluster
	b.Cleanup(func() {
		for _, c := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.Leave(ctx)
			cancel()
		}
	})
	var m muxes
	for i := range 3 {
		cfg := cluster.Config{
			NodeName:       fmt.Sprintf("w%d", i+1),
			Bind:           "127.0.0.1:0",
			LinkKey:        cluster.DeriveLinkKey([]byte(testsupport.Secret)),
			CallTimeout:    5 * time.Second,
			PlainTransport: plain,
			Logger:         slog.New(slog.DiscardHandler),
		}
		m.capture(&cfg)
		if i > 0 {
			cfg.Seeds = []string{nodes[0].Addr()}
		}
		c, err := cluster.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(&relayLog{}); err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, c)
	}
	clustertest.WaitConverged(b, nodes)
	ports := map[int]bool{}
	for _, c := range nodes {
		_, p, _ := strings.Cut(c.Addr(), ":")
		port, _ := strconv.Atoi(p)
		ports[port] = true
	}
	before := timeWaitOn(b, ports)

	var pairs [][2]*cluster.Cluster
	for _, from := range nodes {
		for _, to := range nodes {
			if from != to {
				pairs = append(pairs, [2]*cluster.Cluster{from, to})
			}
		}
	}
	total := int(timeWaitFor.Seconds() * float64(*timeWaitRate))
	interval := time.Second / time.Duration(*timeWaitRate)
	pace := time.NewTimer(0)
	defer pace.Stop()
	var wg sync.WaitGroup
	var failed atomic.Int64
	payload := []byte(strings.Repeat("x", 200))
	b.ResetTimer()
	start := time.Now()
	for i := range total {
		// On schedule (call i at start + i*interval), catching up at once
		// when behind, as a ticker would not (it drops ticks).
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			pace.Reset(d)
			<-pace.C
		}
		p := pairs[i%len(pairs)]
		wg.Go(func() {
			if _, err := p[0].Call(context.Background(), p[1].Name(), payload); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	tw := timeWaitOn(b, ports) - before
	var dials uint64
	for _, c := range nodes {
		if t := m.by[c.Name()]; t != nil {
			s := t.Stats()
			dials += s.Dials + s.PlainDials
		}
	}
	b.ReportMetric(float64(tw), "time-wait")
	b.ReportMetric(float64(total)/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(failed.Load()), "errors")
	if !plain {
		b.ReportMetric(float64(dials), "dials")
	}
	b.Logf("%d calls in %s, %d failed; %d sockets in TIME_WAIT on ports %v", total, elapsed.Round(time.Millisecond), failed.Load(), tw, ports)
}

// timeWaitOn counts the TCP sockets in TIME_WAIT whose local or remote
// port is one of ports, from /proc/net/tcp and /proc/net/tcp6.
func timeWaitOn(tb testing.TB, ports map[int]bool) int {
	tb.Helper()
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			tb.Skipf("no %s: %v", f, err)
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 4 || fs[3] != "06" { // 06: TIME_WAIT
				continue
			}
			if ports[hexPort(fs[1])] || ports[hexPort(fs[2])] {
				n++
			}
		}
		_ = fh.Close()
	}
	return n
}

// hexPort returns the port of an address as /proc/net/tcp writes it
// ("0100007F:1F90").
func hexPort(a string) int {
	_, h, _ := strings.Cut(a, ":")
	p, _ := strconv.ParseUint(h, 16, 16)
	return int(p)
}
