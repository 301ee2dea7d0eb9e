package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"wsmesh/config"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

func TestSendReachesClient(t *testing.T) {
	tn := nodetest.Start(t, nodetest.Config(t))
	c := tn.Dial(t, tn.Token(t, "42", "web"), testsupport.DialOpts{})
	testsupport.WaitFor(t, "session registered", func() bool { return tn.Hub().Len() == 1 })

	out := tn.Send(t, `{"users":["42","nobody","42"],"data":{"hello":"world","n":[1,2]}}`)
	if out["delivered"] != 1.0 || out["offline"] != 1.0 || out["failed"] != 0.0 {
		t.Fatalf("counts: %v", out)
	}
	res := out["results"].([]any)
	if len(res) != 2 {
		t.Fatalf("want one result per session or offline user, got %v", res)
	}
	want := []map[string]any{
		{"user": "42", "session": c.Session(t), "device": "web", "node": "t1", "status": "delivered"},
		{"user": "nobody", "status": "offline"},
	}
	for i, w := range want {
		got := res[i].(map[string]any)
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("result %d = %v, want %v", i, got, w)
		}
	}
	f := c.Next(t)
	if f["type"] != "message" || f["id"] != out["id"] {
		t.Fatalf("frame %v, want message with id %v", f, out["id"])
	}
	if fmt.Sprint(f["data"]) != fmt.Sprint(map[string]any{"hello": "world", "n": []any{1.0, 2.0}}) {
		t.Fatalf("data = %v", f["data"])
	}
}

func TestSendKeepsOrder(t *testing.T) {
	tn := nodetest.Start(t, nodetest.Config(t))
	c := tn.Dial(t, tn.Token(t, "o", ""), testsupport.DialOpts{})
	testsupport.WaitFor(t, "session registered", func() bool { return tn.Hub().Len() == 1 })
	const n = 300
	var ids []string
	for i := range n {
		ids = append(ids, tn.Send(t, fmt.Sprintf(`{"users":["o"],"data":%d}`, i))["id"].(string))
	}
	for i := range n {
		f := c.Next(t)
		if f["data"] != float64(i) || f["id"] != ids[i] {
			t.Fatalf("frame %d: %v, want data %d id %s", i, f, i, ids[i])
		}
		if i > 0 && ids[i] <= ids[i-1] {
			t.Fatalf("ids not increasing: %s then %s", ids[i-1], ids[i])
		}
	}
}

func TestDuplicateLoginEvicts(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprintf("single_device=%v", single), func(t *testing.T) {
			cfg := nodetest.Config(t)
			cfg.Session.SingleDevice = single
			tn := nodetest.Start(t, cfg)
			old := tn.Dial(t, tn.Token(t, "d", "phone"), testsupport.DialOpts{})
			testsupport.WaitFor(t, "phone login registered", func() bool { return tn.Hub().Len() == 1 })
			other := tn.Dial(t, tn.Token(t, "d", "web"), testsupport.DialOpts{})
			if !single {
				testsupport.WaitFor(t, "web login registered", func() bool { return tn.Hub().Len() == 2 })
			}
			if single {
				if f := old.Next(t); f["type"] != "evicted" {
					t.Fatalf("single_device: phone got %v, want evicted by the web login", f)
				}
				old.WaitClose(t)
				old = other
				other = nil
			}
			newer := tn.Dial(t, tn.Token(t, "d", map[bool]string{false: "phone", true: "tablet"}[single]), testsupport.DialOpts{})
			f := old.Next(t)
			if f["type"] != "evicted" || f["reason"] != "duplicate_login" {
				t.Fatalf("old session got %v, want the evicted frame", f)
			}
			if code, _ := old.WaitClose(t); code != 4000 {
				t.Fatalf("old session closed with %d, want 4000", code)
			}
			want := 2.0
			if single {
				want = 1
			}
			out := tn.Send(t, `{"users":["d"],"data":"after"}`)
			if out["delivered"] != want {
				t.Fatalf("after eviction: %v, want %v delivered", out, want)
			}
			if f := newer.Next(t); f["data"] != "after" {
				t.Fatalf("newer session got %v", f)
			}
			if other != nil {
				if f := other.Next(t); f["data"] != "after" {
					t.Fatalf("other device got %v", f)
				}
			}
		})
	}
}

// TestShutdownNotHeldByIdleConnection: a connection that never sends a
// request (browsers keep a spare one) must not delay the 1012, and once
// shut down the node accepts no request. (Package session tests that the
// hub closes every session with 1012.)
func TestShutdownNotHeldByIdleConnection(t *testing.T) {
	tn := nodetest.Start(t, nodetest.Config(t))
	c := tn.Dial(t, tn.Token(t, "i", ""), testsupport.DialOpts{})
	testsupport.WaitFor(t, "session registered", func() bool { return tn.Hub().Len() == 1 })
	idle, err := net.Dial("tcp", tn.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	start := time.Now()
	tn.BeginStop() // as SIGTERM
	if code, reason := c.WaitClose(t); code != 1012 || reason != "node shutting down" {
		t.Fatalf("close %d %q, want 1012", code, reason)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("1012 came %s after shutdown began: held back by the idle connection", took)
	}
	tn.Stop(t)
	t.Logf("shutdown done %s after it began", time.Since(start))
	if _, err := http.Get("http://" + tn.Addr() + "/healthz"); err == nil {
		t.Fatal("node still accepts requests after shutdown")
	}
}

// TestSessionConfigReachesHub: the node hands its hub the [auth] and
// [session] settings whose effects package session tests: a foreign Origin
// is refused, an oversize frame closes with 1009, a client silent past
// idle_timeout is dropped.
func TestSessionConfigReachesHub(t *testing.T) {
	cfg := nodetest.Config(t)
	cfg.Auth.AllowedOrigins = []string{"https://app.example"}
	cfg.Session.MaxMessageBytes = 1024
	cfg.Session.PingInterval = config.Duration(50 * time.Millisecond)
	cfg.Session.IdleTimeout = config.Duration(500 * time.Millisecond)
	tn := nodetest.Start(t, cfg)

	_, resp, err := tn.TryDial(tn.Token(t, "o", ""), testsupport.DialOpts{Header: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err %v, resp %v; want 403", err, resp)
	}
	big := tn.Dial(t, tn.Token(t, "big", ""), testsupport.DialOpts{})
	big.Write(t, `"`+strings.Repeat("x", 2000)+`"`)
	if code, _ := big.WaitClose(t); code != 1009 {
		t.Fatalf("2000-byte frame with max_message_bytes 1024: close %d, want 1009", code)
	}
	silent := tn.Dial(t, tn.Token(t, "silent", ""), testsupport.DialOpts{Silent: true})
	start := time.Now()
	silent.WaitClose(t)
	t.Logf("silent client dropped after %s (idle_timeout 500ms)", time.Since(start))
}
