package main

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"

	"wsmesh/config"
)

func TestSendReachesClient(t *testing.T) {
	tn := startNode(t, testConfig(t))
	c := tn.dial(t, tn.token(t, "42", "web"), dialOpts{})
	waitFor(t, "session registered", func() bool { return tn.hub.Len() == 1 })

	out := tn.send(t, `{"users":["42","nobody","42"],"data":{"hello":"world","n":[1,2]}}`)
	if out["delivered"] != 1.0 || out["offline"] != 1.0 || out["failed"] != 0.0 {
		t.Fatalf("counts: %v", out)
	}
	res := out["results"].([]any)
	if len(res) != 2 {
		t.Fatalf("want one result per session or offline user, got %v", res)
	}
	want := []map[string]any{
		{"user": "42", "device": "web", "node": "t1", "status": "delivered"},
		{"user": "nobody", "status": "offline"},
	}
	for i, w := range want {
		got := res[i].(map[string]any)
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("result %d = %v, want %v", i, got, w)
		}
	}
	f := c.next(t)
	if f["type"] != "message" || f["id"] != out["id"] {
		t.Fatalf("frame %v, want message with id %v", f, out["id"])
	}
	if fmt.Sprint(f["data"]) != fmt.Sprint(map[string]any{"hello": "world", "n": []any{1.0, 2.0}}) {
		t.Fatalf("data = %v", f["data"])
	}
}

func TestSendDeviceFilter(t *testing.T) {
	tn := startNode(t, testConfig(t))
	web := tn.dial(t, tn.token(t, "7", "web"), dialOpts{})
	app := tn.dial(t, tn.token(t, "7", "app"), dialOpts{})
	waitFor(t, "two sessions", func() bool { return tn.hub.Len() == 2 })

	out := tn.send(t, `{"users":["7"],"device":"app","data":"only app"}`)
	if out["delivered"] != 1.0 {
		t.Fatalf("device filter: %v", out)
	}
	if f := app.next(t); f["data"] != "only app" {
		t.Fatalf("app got %v", f)
	}
	out = tn.send(t, `{"users":["7"],"data":"both"}`)
	if out["delivered"] != 2.0 {
		t.Fatalf("no filter: %v", out)
	}
	if f := web.next(t); f["data"] != "both" {
		t.Fatalf("web got %v first, want only the unfiltered message", f)
	}
	if f := app.next(t); f["data"] != "both" {
		t.Fatalf("app got %v", f)
	}
	out = tn.send(t, `{"users":["7"],"device":"tv","data":"x"}`)
	if out["offline"] != 1.0 || out["delivered"] != 0.0 {
		t.Fatalf("no session on that device: %v", out)
	}
}

func TestSendKeepsOrder(t *testing.T) {
	tn := startNode(t, testConfig(t))
	c := tn.dial(t, tn.token(t, "o", ""), dialOpts{})
	waitFor(t, "session registered", func() bool { return tn.hub.Len() == 1 })
	const n = 300
	var ids []string
	for i := range n {
		ids = append(ids, tn.send(t, fmt.Sprintf(`{"users":["o"],"data":%d}`, i))["id"].(string))
	}
	for i := range n {
		f := c.next(t)
		if f["data"] != float64(i) || f["id"] != ids[i] {
			t.Fatalf("frame %d: %v, want data %d id %s", i, f, i, ids[i])
		}
		if i > 0 && ids[i] <= ids[i-1] {
			t.Fatalf("ids not increasing: %s then %s", ids[i-1], ids[i])
		}
	}
}

func TestAuthFailuresClose4001(t *testing.T) {
	tn := startNode(t, testConfig(t))
	now := time.Now()
	sign := func(secret string, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	b64 := base64.RawURLEncoding.EncodeToString
	none := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64([]byte(fmt.Sprintf(`{"sub":"1","exp":%d}`, now.Add(time.Hour).Unix()))) + "."
	cases := []struct {
		name, token, reason string
	}{
		{"missing", "", "token missing"},
		{"malformed", "not.a.jwt", "token malformed"},
		{"wrong secret", sign("another-secret-another-secret-xx", jwt.MapClaims{"sub": "1", "exp": now.Add(time.Hour).Unix()}), "token signature invalid"},
		{"expired", sign(testSecret, jwt.MapClaims{"sub": "1", "exp": now.Add(-time.Hour).Unix()}), "token expired"},
		{"alg none", none, `algorithm "none" not allowed`},
		{"no sub", sign(testSecret, jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}), "no sub"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tn.dial(t, tc.token, dialOpts{noToken: tc.token == ""})
			code, reason := c.waitClose(t)
			if code != 4001 || !strings.Contains(reason, tc.reason) {
				t.Fatalf("close %d %q, want 4001 with %q", code, reason, tc.reason)
			}
			if tc.token != "" && strings.Contains(reason, tc.token) {
				t.Fatal("close reason contains the token")
			}
		})
	}
	if n := tn.hub.Len(); n != 0 {
		t.Fatalf("%d sessions after refused logins", n)
	}
	t.Run("bearer header accepted", func(t *testing.T) {
		h := http.Header{"Authorization": {"Bearer " + tn.token(t, "hdr", "")}}
		tn.dial(t, "", dialOpts{noToken: true, header: h})
		waitFor(t, "session by header token", func() bool { return tn.hub.Len() == 1 })
		if out := tn.send(t, `{"users":["hdr"],"data":1}`); out["delivered"] != 1.0 {
			t.Fatalf("header token session not reached: %v", out)
		}
	})
}

func TestOriginCheckedBeforeUpgrade(t *testing.T) {
	cfg := testConfig(t)
	cfg.Auth.AllowedOrigins = []string{"https://app.example"}
	tn := startNode(t, cfg)
	tok := tn.token(t, "u", "")

	_, resp, err := tn.tryDial(tok, dialOpts{header: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bad origin: err %v, resp %v; want 403", err, resp)
	}
	tn.dial(t, tok, dialOpts{header: http.Header{"Origin": {"https://app.example"}}})
	waitFor(t, "allowed origin session", func() bool { return tn.hub.Len() == 1 })
}

func TestPingFrameAndUnknownFrames(t *testing.T) {
	tn := startNode(t, testConfig(t))
	c := tn.dial(t, tn.token(t, "p", ""), dialOpts{})
	c.write(t, `{"type":"hello"}`)
	c.write(t, `not json at all`)
	if err := c.conn.WriteMessage(gws.OpcodeBinary, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	c.write(t, `{"type":"ping"}`)
	if f := c.next(t); f["type"] != "pong" || len(f) != 1 {
		t.Fatalf("got %v, want exactly {\"type\":\"pong\"} (unknown frames ignored)", f)
	}
}

func TestServerPingsAndIdleTimeout(t *testing.T) {
	cfg := testConfig(t)
	cfg.Session.PingInterval = config.Duration(50 * time.Millisecond)
	cfg.Session.IdleTimeout = config.Duration(1500 * time.Millisecond) // room for a loaded CI machine
	tn := startNode(t, cfg)
	live := tn.dial(t, tn.token(t, "live", ""), dialOpts{})
	silent := tn.dial(t, tn.token(t, "silent", ""), dialOpts{silent: true})

	for range 3 {
		select {
		case <-live.pings:
		case <-time.After(waitLimit):
			t.Fatal("server sent no WebSocket ping")
		}
	}
	start := time.Now()
	silent.waitClose(t)
	t.Logf("silent client closed after %s", time.Since(start))
	select {
	case <-live.closed:
		t.Fatalf("a client that answers pings was closed: %d %q", live.code, live.reason)
	default:
	}
	waitFor(t, "the server to drop the silent session", func() bool { return tn.hub.Len() == 1 })
	if out := tn.send(t, `{"users":["live","silent"],"data":1}`); out["delivered"] != 1.0 || out["offline"] != 1.0 {
		t.Fatalf("after idle timeout: %v", out)
	}
}

func TestOversizeFrameCloses1009(t *testing.T) {
	cfg := testConfig(t)
	cfg.Session.MaxMessageBytes = 1024
	tn := startNode(t, cfg)
	c := tn.dial(t, tn.token(t, "big", ""), dialOpts{})
	c.write(t, `{"type":"ping"}`)
	c.next(t)
	c.write(t, `{"type":"ping","pad":"`+strings.Repeat("x", 2000)+`"}`)
	if code, _ := c.waitClose(t); code != 1009 {
		t.Fatalf("close code %d, want 1009", code)
	}
}

func TestDuplicateLoginEvicts(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprintf("single_device=%v", single), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Session.SingleDevice = single
			tn := startNode(t, cfg)
			old := tn.dial(t, tn.token(t, "d", "phone"), dialOpts{})
			waitFor(t, "phone login registered", func() bool { return tn.hub.Len() == 1 })
			other := tn.dial(t, tn.token(t, "d", "web"), dialOpts{})
			if !single {
				waitFor(t, "web login registered", func() bool { return tn.hub.Len() == 2 })
			}
			if single {
				if f := old.next(t); f["type"] != "evicted" {
					t.Fatalf("single_device: phone got %v, want evicted by the web login", f)
				}
				old.waitClose(t)
				old = other
				other = nil
			}
			newer := tn.dial(t, tn.token(t, "d", map[bool]string{false: "phone", true: "tablet"}[single]), dialOpts{})
			f := old.next(t)
			if f["type"] != "evicted" || f["reason"] != "duplicate_login" {
				t.Fatalf("old session got %v, want the evicted frame", f)
			}
			if code, _ := old.waitClose(t); code != 4000 {
				t.Fatalf("old session closed with %d, want 4000", code)
			}
			want := 2.0
			if single {
				want = 1
			}
			out := tn.send(t, `{"users":["d"],"data":"after"}`)
			if out["delivered"] != want {
				t.Fatalf("after eviction: %v, want %v delivered", out, want)
			}
			if f := newer.next(t); f["data"] != "after" {
				t.Fatalf("newer session got %v", f)
			}
			if other != nil {
				if f := other.next(t); f["data"] != "after" {
					t.Fatalf("other device got %v", f)
				}
			}
		})
	}
}

func TestSlowConsumerCloses4002(t *testing.T) {
	cfg := testConfig(t)
	cfg.Session.SendQueue = 8
	cfg.HTTP.MaxBodyBytes = 1 << 20
	tn := startNode(t, cfg)
	slow := tn.dial(t, tn.token(t, "slow", ""), dialOpts{noRead: true, rcvBuf: 4096})
	fast := tn.dial(t, tn.token(t, "fast", ""), dialOpts{})
	waitFor(t, "two sessions", func() bool { return tn.hub.Len() == 2 })

	body := `{"users":["slow"],"data":"` + strings.Repeat("s", 60<<10) + `"}`
	var overflowAt int
	for i := 1; i <= 2000 && overflowAt == 0; i++ {
		out := tn.send(t, body)
		if out["failed"] == 1.0 {
			overflowAt = i
			res := out["results"].([]any)[0].(map[string]any)
			if res["status"] != "error" || !strings.Contains(res["error"].(string), "4002") {
				t.Fatalf("overflow result: %v", res)
			}
		}
	}
	if overflowAt == 0 {
		t.Fatal("send queue never overflowed")
	}
	t.Logf("queue overflowed at send %d", overflowAt)
	// Nobody else waits for the slow client.
	if out := tn.send(t, `{"users":["fast"],"data":"unblocked"}`); out["delivered"] != 1.0 {
		t.Fatalf("fast client: %v", out)
	}
	if f := fast.next(t); f["data"] != "unblocked" {
		t.Fatalf("fast client got %v", f)
	}
	if out := tn.send(t, body); out["delivered"] == 1.0 {
		t.Fatalf("a closing slow session still took a message: %v", out)
	}
	slow.startReading()
	if code, reason := slow.waitClose(t); code != 4002 {
		t.Fatalf("slow client closed with %d %q, want 4002", code, reason)
	}
	got := len(slow.frames)
	if got < 1 || got >= overflowAt {
		t.Fatalf("slow client got %d messages before the close; want the ones queued before overflow (< %d)", got, overflowAt)
	}
}

func TestShutdownCloses1012(t *testing.T) {
	tn := startNode(t, testConfig(t))
	var clients []*wsClient
	for i := range 5 {
		clients = append(clients, tn.dial(t, tn.token(t, fmt.Sprint("s", i), ""), dialOpts{}))
	}
	waitFor(t, "five sessions", func() bool { return tn.hub.Len() == 5 })
	tn.stop(t)
	for i, c := range clients {
		if code, reason := c.waitClose(t); code != 1012 || reason != "node shutting down" {
			t.Fatalf("client %d closed with %d %q, want 1012", i, code, reason)
		}
	}
	if _, err := http.Get("http://" + tn.Addr() + "/healthz"); err == nil {
		t.Fatal("node still accepts requests after shutdown")
	}
}

// TestShutdownNotHeldByIdleConnection: a connection that never sends a
// request (browsers keep a spare one) must not delay the 1012.
func TestShutdownNotHeldByIdleConnection(t *testing.T) {
	tn := startNode(t, testConfig(t))
	c := tn.dial(t, tn.token(t, "i", ""), dialOpts{})
	waitFor(t, "session registered", func() bool { return tn.hub.Len() == 1 })
	idle, err := net.Dial("tcp", tn.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	start := time.Now()
	tn.cancel() // as SIGTERM
	if code, _ := c.waitClose(t); code != 1012 {
		t.Fatalf("close %d, want 1012", code)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("1012 came %s after shutdown began: held back by the idle connection", took)
	}
	tn.stop(t)
	t.Logf("shutdown done %s after it began", time.Since(start))
}
