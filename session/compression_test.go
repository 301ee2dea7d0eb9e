package session_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/session"
)

// collectEvents keeps the messages a gws client reads.
type collectEvents struct {
	gws.BuiltinEventHandler
	got chan string
}

func (e *collectEvents) OnMessage(_ *gws.Conn, m *gws.Message) {
	e.got <- m.Data.String()
	m.Close()
}

// TestCompression: with Config.Compression a client that asks for
// permessage-deflate gets it, and a large message arrives intact; without
// it the extension is declined and the same message arrives too.
func TestCompression(t *testing.T) {
	big := `{"type":"message","id":"x","data":"` + strings.Repeat("live comments compress well ", 100) + `"}`
	for _, on := range []bool{false, true} {
		auth, err := session.NewAuthenticator([]byte("compression-test-secret-0123456789abcdef"))
		if err != nil {
			t.Fatal(err)
		}
		h, err := session.New(session.Config{Auth: auth, Compression: on, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		tok, _ := auth.Mint("u", "web", time.Hour)
		ev := &collectEvents{got: make(chan string, 4)}
		c, resp, err := gws.NewClient(ev, &gws.ClientOption{
			Addr:              "ws://" + srv.Listener.Addr().String() + "/ws?token=" + tok,
			PermessageDeflate: gws.PermessageDeflate{Enabled: true},
		})
		if err != nil {
			t.Fatal(err)
		}
		go c.ReadLoop()
		if got := strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate"); got != on {
			t.Fatalf("compression %v: extension negotiated %v", on, got)
		}
		if w := <-ev.got; !strings.Contains(w, `"type":"welcome"`) {
			t.Fatalf("first frame %q", w)
		}
		// The welcome is written after the session is registered: Deliver finds it.
		if d := h.Deliver("u", "", []byte(big)); len(d) != 1 || d[0].Err != nil {
			t.Fatalf("deliver: %+v", d)
		}
		select {
		case got := <-ev.got:
			if got != big {
				t.Fatalf("compression %v: message of %d bytes arrived as %d bytes", on, len(big), len(got))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("compression %v: message did not arrive", on)
		}
		_ = c.NetConn().Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = h.Shutdown(ctx)
		cancel()
		srv.Close()
	}
}
