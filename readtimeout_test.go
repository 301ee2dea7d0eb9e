package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"wsmesh/config"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// http.read_timeout bounds a request's headers and body, and must not
// touch a WebSocket once upgraded: a session outlives it by far, kept alive
// by pings, and still receives.
func TestReadTimeoutDoesNotTouchWebSockets(t *testing.T) {
	cfg := nodetest.Config(t)
	cfg.HTTP.ReadTimeout = config.Duration(200 * time.Millisecond)
	cfg.Session.PingInterval = config.Duration(250 * time.Millisecond)
	cfg.Session.IdleTimeout = config.Duration(2 * time.Second)
	tn := nodetest.Start(t, cfg)
	c := tn.Dial(t, tn.Token(t, "42", ""), testsupport.DialOpts{})
	for i := range 5 { // 5 pings: over 1 s, five times the read timeout
		select {
		case <-c.Pings:
		case <-c.Closed():
			t.Fatalf("closed after %d pings (code %d, %q): the read timeout reached the WebSocket", i, c.Code, c.Reason)
		case <-time.After(testsupport.WaitLimit):
			t.Fatalf("no ping %d within %s", i+1, testsupport.WaitLimit)
		}
	}
	if got := tn.Send(t, `{"users":["42"],"data":"late"}`); got["delivered"] != 1.0 {
		t.Fatalf("send: %v", got)
	}
	if f := c.Next(t); f["data"] != "late" {
		t.Fatalf("frame %v, want the message", f)
	}
}

// A request whose body never comes held SIGTERM for the whole
// shutdown_timeout ("shutdown cut short"). Now shutdown gives it a second
// (a quarter of shutdown_timeout at most), answers it 503 and goes on.
func TestShutdownNotHeldByStalledBody(t *testing.T) {
	cfg := nodetest.Config(t) // read_timeout 30 s: only shutdown can end the stall
	cfg.Node.ShutdownTimeout = config.Duration(5 * time.Second)
	tn := nodetest.Start(t, cfg)
	nc, err := net.Dial("tcp", tn.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "POST /send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{\"users\":", testsupport.APIKey)
	testsupport.WaitFor(t, "the request to wait for its body", func() bool { return tn.InFlight() == 1 })

	start := time.Now()
	tn.Stop(t)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %s with a stalled body, want far less than shutdown_timeout (5s)", took)
	}
	_ = nc.SetReadDeadline(time.Now().Add(testsupport.WaitLimit))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("stalled request got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "shutting down") {
		t.Errorf("stalled request: %d %s, want 503 node shutting down", resp.StatusCode, body)
	}
}
