package session_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"wsmesh/session"
)

// BenchmarkIdleSessionMemory reports the heap and stack one idle session
// holds in the process, from runtime.MemStats after a GC, over 2000
// sessions opened by raw clients that then stay silent (their side is a
// net.Conn and a bufio.Reader, a few hundred bytes, counted too). It
// needs only the package's public API, so the same file measures an
// earlier version (A/B) as well.
func BenchmarkIdleSessionMemory(b *testing.B) {
	const n = 2000
	auth, err := session.NewAuthenticator([]byte("bench-secret-0123456789-abcdefghijklmnop"))
	if err != nil {
		b.Fatal(err)
	}
	obs := newCountObserver()
	h, err := session.New(session.Config{Auth: auth, Logger: slog.New(slog.DiscardHandler), PingInterval: time.Hour, IdleTimeout: 2 * time.Hour, Observer: obs})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.Shutdown(ctx)
	}()
	tokens := make([]string, n)
	for i := range tokens {
		if tokens[i], err = auth.Mint("u"+strconv.Itoa(i), "web", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	var perConn float64
	for b.Loop() {
		before := inUse()
		conns := make([]net.Conn, 0, n)
		for _, tok := range tokens {
			c, _ := rawUpgrade(b, srv.Listener.Addr().String(), tok, "")
			conns = append(conns, c)
		}
		obs.wait(b, n)
		perConn = float64(inUse()-before) / n
		closeConns(b, obs, conns)
	}
	b.ReportMetric(perConn, "B/session")
}

// rawUpgrade opens a WebSocket to addr as a raw client (a net.Conn and
// nothing else) with token and extra request header lines, and returns
// the connection and the server's answer to the upgrade.
func rawUpgrade(b *testing.B, addr, token, header string) (net.Conn, *http.Response) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	req := "GET /ws?token=" + token + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + header + "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("handshake: %v %v", resp, err)
	}
	return c, resp
}

// countObserver counts the hub's sessions as its Observer hears of them,
// and wakes wait at every change. Its methods are a superset of every
// version's Observer, so the benchmark runs on earlier versions too.
type countObserver struct {
	mu      sync.Mutex
	n       int
	changed chan struct{} // buffered(1): poked at every change
}

func newCountObserver() *countObserver { return &countObserver{changed: make(chan struct{}, 1)} }

func (o *countObserver) add(d int) {
	o.mu.Lock()
	o.n += d
	o.mu.Unlock()
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

func (o *countObserver) SessionOpened(session.Info) { o.add(1) }
func (o *countObserver) SessionClosed(session.Info) { o.add(-1) }
func (o *countObserver) RoomChanged(string, int)    {}

// wait waits until the hub holds n sessions, for at most 10 s.
func (o *countObserver) wait(b *testing.B, n int) {
	timeout := time.After(10 * time.Second)
	for {
		o.mu.Lock()
		got := o.n
		o.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-o.changed:
		case <-timeout:
			b.Fatalf("%d sessions, want %d", got, n)
		}
	}
}

// closeConns closes conns and waits until the hub holds no session.
func closeConns(b *testing.B, o *countObserver, conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
	o.wait(b, 0)
}

// inUse returns the heap and stack in use after a garbage collection.
func inUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
