package session_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/session"
)

// BenchmarkCompression measures what session.compression costs: the heap
// and stack of an idle session whose client negotiated permessage-deflate
// (raw clients, as BenchmarkIdleSessionMemory), and the time to deliver a
// 2 KiB JSON message to a client that reads and inflates it (gws client,
// same process: its inflating is in the figure too), with the extension
// off and on.
func BenchmarkCompression(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := map[bool]string{false: "off", true: "on"}[on]
		b.Run("idle/"+name, func(b *testing.B) { benchIdleCompressed(b, on) })
		b.Run("send2KiB/"+name, func(b *testing.B) { benchSendCompressed(b, on) })
	}
}

func compressionHub(b *testing.B, on bool) (*session.Hub, *session.Authenticator, *httptest.Server, *countObserver) {
	auth, err := session.NewAuthenticator([]byte("bench-secret-0123456789-abcdefghijklmnop"))
	if err != nil {
		b.Fatal(err)
	}
	obs := newCountObserver()
	h, err := session.New(session.Config{Auth: auth, Logger: slog.New(slog.DiscardHandler), PingInterval: time.Hour, IdleTimeout: 2 * time.Hour,
		Compression: on, SendQueue: 1 << 16, Observer: obs})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.Shutdown(ctx)
		srv.Close()
	})
	return h, auth, srv, obs
}

func benchIdleCompressed(b *testing.B, on bool) {
	const n = 1000
	_, auth, srv, obs := compressionHub(b, on)
	var perConn float64
	for b.Loop() {
		before := inUse()
		conns := make([]net.Conn, 0, n)
		for i := range n {
			tok, err := auth.Mint("u"+strconv.Itoa(i), "web", time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			c, resp := rawUpgrade(b, srv.Listener.Addr().String(), tok,
				"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n")
			if got := strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate"); got != on {
				b.Fatalf("compression negotiated: %v, want %v", got, on)
			}
			conns = append(conns, c)
		}
		obs.wait(b, n)
		perConn = float64(inUse()-before) / n
		closeConns(b, obs, conns)
	}
	b.ReportMetric(perConn, "B/session")
}

// countingEvents counts the messages a gws client reads.
type countingEvents struct {
	gws.BuiltinEventHandler
	n    atomic.Int64
	more chan struct{} // buffered(1): poked at every message
}

func (e *countingEvents) OnMessage(_ *gws.Conn, m *gws.Message) {
	m.Close()
	e.n.Add(1)
	select {
	case e.more <- struct{}{}:
	default:
	}
}

// wait waits until the client has read n messages, for at most limit.
func (e *countingEvents) wait(b *testing.B, n int64, limit time.Duration) {
	timeout := time.After(limit)
	for e.n.Load() < n {
		select {
		case <-e.more:
		case <-timeout:
			b.Fatalf("client read %d of %d messages", e.n.Load(), n)
		}
	}
}

func benchSendCompressed(b *testing.B, on bool) {
	h, auth, srv, _ := compressionHub(b, on)
	tok, err := auth.Mint("reader", "web", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	ev := &countingEvents{more: make(chan struct{}, 1)}
	c, _, err := gws.NewClient(ev, &gws.ClientOption{
		Addr:              "ws://" + srv.Listener.Addr().String() + "/ws?token=" + tok,
		PermessageDeflate: gws.PermessageDeflate{Enabled: true, ServerContextTakeover: false, ClientContextTakeover: false},
	})
	if err != nil {
		b.Fatal(err)
	}
	go c.ReadLoop()
	defer c.NetConn().Close()
	ev.wait(b, 1, 10*time.Second) // the welcome: written once the session is registered
	var sb strings.Builder
	for i := 0; sb.Len() < 2048; i++ {
		fmt.Fprintf(&sb, `{"user":"u%d","text":"a live comment number %d with the usual words in it"},`, i, i)
	}
	frame := session.MessageFrame("01a2062b-1f04-7000-a8b9-4ec96ae352af", []byte("["+strings.TrimSuffix(sb.String(), ",")+"]"))
	b.SetBytes(int64(len(frame)))
	sent := int64(0)
	for b.Loop() {
		for _, d := range h.Deliver("reader", "", frame) {
			if d.Err != nil {
				b.Fatal(d.Err)
			}
		}
		sent++
		if sent%1024 == 0 { // keep the queue bounded: wait for the client to catch up
			ev.wait(b, sent-64, time.Minute)
		}
	}
	ev.wait(b, sent+1, 30*time.Second) // +1: the welcome
}
