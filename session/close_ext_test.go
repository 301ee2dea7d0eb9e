package session_test

// Each way the server closes a session, with its close code: 4001 (bad
// token), 1009 (oversize frame), 4000 (evicted), 4002 (slow consumer),
// 1012 (shutdown). Which of two logins is evicted is the cluster's
// decision (the root's TestDuplicateLoginEvicts runs it on a node); the
// hub carries it out.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"wsmesh/internal/testsupport"
	"wsmesh/session"
)

func TestAuthFailuresClose4001(t *testing.T) {
	h := serveHub(t, session.Config{})
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
		{"expired", sign(testsupport.Secret, jwt.MapClaims{"sub": "1", "exp": now.Add(-time.Hour).Unix()}), "token expired"},
		{"alg none", none, `algorithm "none" not allowed`},
		{"no sub", sign(testsupport.Secret, jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}), "no sub"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := h.Dial(t, tc.token, testsupport.DialOpts{NoToken: tc.token == ""})
			code, reason := c.WaitClose(t)
			if code != session.CloseUnauthorized || !strings.Contains(reason, tc.reason) {
				t.Fatalf("close %d %q, want 4001 with %q", code, reason, tc.reason)
			}
			if tc.token != "" && strings.Contains(reason, tc.token) {
				t.Fatal("close reason contains the token")
			}
		})
	}
	if n := h.Len(); n != 0 {
		t.Fatalf("%d sessions after refused logins", n)
	}
	t.Run("bearer header accepted", func(t *testing.T) {
		hdr := http.Header{"Authorization": {"Bearer " + h.Token(t, "hdr", "")}}
		c := h.Dial(t, "", testsupport.DialOpts{NoToken: true, Header: hdr})
		testsupport.WaitFor(t, "session by header token", func() bool { return h.Len() == 1 })
		if got := delivered(h.deliver("hdr", "", "1", "1")); got != 1 {
			t.Fatalf("header token session not reached: %d delivered", got)
		}
		if f := c.Next(t); f["data"] != 1.0 {
			t.Fatalf("header token session got %v", f)
		}
	})
}

func TestOversizeFrameCloses1009(t *testing.T) {
	h := serveHub(t, session.Config{MaxMessageBytes: 1024})
	c := h.Dial(t, h.Token(t, "big", ""), testsupport.DialOpts{})
	c.Write(t, `{"type":"ping"}`)
	c.Next(t)
	c.Write(t, `{"type":"ping","pad":"`+strings.Repeat("x", 2000)+`"}`)
	if code, _ := c.WaitClose(t); code != session.CloseTooLarge {
		t.Fatalf("close code %d, want 1009", code)
	}
}

// TestEvictCloses4000: Evict, as the cluster calls it when a newer login
// won on another node, sends the evicted frame after what is queued, then
// 4000; an unknown session id evicts nothing.
func TestEvictCloses4000(t *testing.T) {
	h := serveHub(t, session.Config{})
	c := h.Dial(t, h.Token(t, "e", "web"), testsupport.DialOpts{})
	testsupport.WaitFor(t, "session registered", func() bool { return h.Len() == 1 })
	id := sessionID(t, h, "e")
	if h.Evict("e", id+"-other") || h.Evict("nobody", id) {
		t.Fatal("Evict of a session that is not here reported one")
	}
	if !h.Evict("e", id) {
		t.Fatalf("Evict(e, %s) found no session", id)
	}
	if f := c.Next(t); f["data"] != "probe" {
		t.Fatalf("got %v first, want the frame queued before the eviction", f)
	}
	if f := c.Next(t); f["type"] != "evicted" || f["reason"] != "duplicate_login" {
		t.Fatalf("got %v, want the evicted frame", f)
	}
	if code, _ := c.WaitClose(t); code != session.CloseEvicted {
		t.Fatalf("closed with %d, want 4000", code)
	}
	testsupport.WaitFor(t, "the evicted session gone", func() bool { return h.Len() == 0 })
	if h.Evict("e", id) {
		t.Fatal("Evict of a closed session reported one")
	}
}

func TestSlowConsumerCloses4002(t *testing.T) {
	h := serveHub(t, session.Config{SendQueue: 8})
	slow := h.Dial(t, h.Token(t, "slow", ""), testsupport.DialOpts{NoRead: true, RcvBuf: 4096})
	fast := h.Dial(t, h.Token(t, "fast", ""), testsupport.DialOpts{})
	testsupport.WaitFor(t, "two sessions", func() bool { return h.Len() == 2 })

	data := `"` + strings.Repeat("s", 60<<10) + `"`
	var overflowAt int
	for i := 1; i <= 2000 && overflowAt == 0; i++ {
		ds := h.deliver("slow", "", fmt.Sprint(i), data)
		if len(ds) != 1 {
			t.Fatalf("deliver %d: %+v, want the slow session", i, ds)
		}
		if err := ds[0].Err; err != nil {
			overflowAt = i
			if !errors.Is(err, session.ErrSlowConsumer) || !strings.Contains(err.Error(), "4002") {
				t.Fatalf("overflow: %v, want ErrSlowConsumer (4002)", err)
			}
		}
	}
	if overflowAt == 0 {
		t.Fatal("send queue never overflowed")
	}
	t.Logf("queue overflowed at delivery %d", overflowAt)
	// Nobody else waits for the slow client.
	if got := delivered(h.deliver("fast", "", "f", `"unblocked"`)); got != 1 {
		t.Fatalf("fast client: %d delivered", got)
	}
	if f := fast.Next(t); f["data"] != "unblocked" {
		t.Fatalf("fast client got %v", f)
	}
	if ds := h.deliver("slow", "", "late", data); delivered(ds) != 0 {
		t.Fatalf("a closing slow session still took a message: %+v", ds)
	}
	slow.StartReading()
	if code, reason := slow.WaitClose(t); code != session.CloseSlowConsumer {
		t.Fatalf("slow client closed with %d %q, want 4002", code, reason)
	}
	got := len(slow.Frames)
	if got < 1 || got >= overflowAt {
		t.Fatalf("slow client got %d messages before the close; want the ones queued before overflow (< %d)", got, overflowAt)
	}
}

// TestShutdownCloses1012: Shutdown closes every session with 1012 and
// waits for them; a WebSocket upgraded after it gets 1012 at once.
func TestShutdownCloses1012(t *testing.T) {
	h := serveHub(t, session.Config{})
	var clients []*testsupport.WSClient
	for i := range 5 {
		clients = append(clients, h.Dial(t, h.Token(t, fmt.Sprint("s", i), ""), testsupport.DialOpts{}))
	}
	testsupport.WaitFor(t, "five sessions", func() bool { return h.Len() == 5 })
	ctx, cancel := context.WithTimeout(context.Background(), testsupport.WaitLimit)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i, c := range clients {
		if code, reason := c.WaitClose(t); code != session.CloseServerRestart || reason != "node shutting down" {
			t.Fatalf("client %d closed with %d %q, want 1012", i, code, reason)
		}
	}
	if n := h.Len(); n != 0 {
		t.Fatalf("%d sessions after Shutdown", n)
	}
	late := h.Dial(t, h.Token(t, "late", ""), testsupport.DialOpts{})
	if code, _ := late.WaitClose(t); code != session.CloseServerRestart {
		t.Fatalf("a login after Shutdown closed with %d, want 1012", code)
	}
}
