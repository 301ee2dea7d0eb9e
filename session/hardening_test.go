package session

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const waitLimit = 10 * time.Second

// testHub serves a Hub on a loopback httptest server until the test ends.
func testHub(t *testing.T, cfg Config) (*Hub, *httptest.Server, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	cfg.Auth = newTestAuth(t)
	cfg.Logger = slog.New(rec)
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		srv.Close()
	})
	return h, srv, rec
}

// logRecorder is a slog.Handler that keeps every record's message and level.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.lines = append(r.lines, rec.Level.String()+" "+rec.Message)
	r.mu.Unlock()
	return nil
}

// count returns how many records were exactly "LEVEL message".
func (r *logRecorder) count(line string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if l == line {
			n++
		}
	}
	return n
}

// rawClient is a WebSocket client that writes frames byte by byte, so a test
// can send what no library would.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dialRaw completes a handshake to srv as user and returns the client. With
// rcvBuf > 0 its socket's receive buffer is that small.
func dialRaw(t *testing.T, srv *httptest.Server, user string, rcvBuf int) *rawClient {
	t.Helper()
	tok, err := newTestAuth(t).Mint(user, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Timeout: waitLimit}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
		}
	}
	nc, err := d.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	req := "GET /ws?token=" + tok + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: status %d", resp.StatusCode)
	}
	if op, p := c.read(); op != 0x1 || !bytes.HasPrefix(p, []byte(`{"type":"welcome",`)) {
		t.Fatalf("first frame: opcode %d %q, want the welcome", op, p)
	}
	return c
}

// frame returns a masked client frame (mask key 0: the payload goes as is).
func frame(opcode byte, payload []byte) []byte {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, 0, 0, 0, 0)
	return append(b, payload...)
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("raw write: %v", err)
	}
}

// read returns the next frame from the server (unmasked, unfragmented).
func (c *rawClient) read() (opcode byte, payload []byte) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(waitLimit))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		c.t.Fatalf("raw read: %v", err)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		_, _ = io.ReadFull(c.br, e[:])
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		_, _ = io.ReadFull(c.br, e[:])
		n = binary.BigEndian.Uint64(e[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		c.t.Fatalf("raw read payload: %v", err)
	}
	return h[0] & 0x0f, payload
}

// readUntil skips frames until one with opcode comes.
func (c *rawClient) readUntil(opcode byte) []byte {
	c.t.Helper()
	for range 100 {
		if op, p := c.read(); op == opcode {
			return p
		}
	}
	c.t.Fatalf("no frame with opcode %d in 100 frames", opcode)
	return nil
}

func closeCode(payload []byte) uint16 {
	if len(payload) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(payload)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForWithin(t, waitLimit, what, cond)
}

func waitForWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A frame header whose 64-bit length has the top bit set panicked gws's read
// loop and with it the process. Now that connection alone is closed with
// 1002 and the others keep being served.
func TestFrameLengthTopBitSet(t *testing.T) {
	h, srv, _ := testHub(t, Config{})
	bystander := dialRaw(t, srv, "bystander", 0)
	attacker := dialRaw(t, srv, "attacker", 0)
	waitFor(t, "two sessions", func() bool { return h.Len() == 2 })

	hdr := []byte{0x82, 0xff}
	hdr = binary.BigEndian.AppendUint64(hdr, 1<<63)
	attacker.write(append(hdr, 1, 2, 3, 4))
	if code := closeCode(attacker.readUntil(0x8)); code != 1002 {
		t.Errorf("attacker closed with %d, want 1002 (protocol error)", code)
	}
	waitFor(t, "the attacker's session to end", func() bool { return h.Len() == 1 })

	ds := h.Deliver("bystander", "", MessageFrame("m1", []byte(`1`)))
	if len(ds) != 1 || ds[0].Err != nil {
		t.Fatalf("deliver to bystander: %+v", ds)
	}
	if _, p := bystander.read(); !bytes.Contains(p, []byte(`"m1"`)) {
		t.Errorf("bystander got %q, want message m1", p)
	}
}

// RFC 6455 §5.5.3: a pong echoes the ping's application data. Clients that
// check it (python websockets) dropped every connection after ~40 s.
func TestPongEchoesPingPayload(t *testing.T) {
	_, srv, _ := testHub(t, Config{})
	c := dialRaw(t, srv, "u", 0)
	for _, payload := range []string{"", "keepalive-1", strings.Repeat("p", 125)} {
		c.write(frame(0x9, []byte(payload)))
		if got := c.readUntil(0xA); string(got) != payload {
			t.Errorf("pong payload %q, want %q", got, payload)
		}
	}
}

// A client that sends pings and never reads made the node queue one reply
// per ping without a bound (24 to 428 MiB in 6 s). Replies owed are now at
// most one of each kind, whatever the number of pings.
func TestPingFloodNeverReadingIsBounded(t *testing.T) {
	h, srv, _ := testHub(t, Config{WriteTimeout: time.Minute})
	c := dialRaw(t, srv, "flooder", 4096)
	waitFor(t, "the session", func() bool { return h.sessionForTest("flooder") != nil })
	s := h.sessionForTest("flooder")
	before := h.Stats().ClientFrames

	const pings = 100_000 // ~1 MB of replies: more than the socket buffers hold
	chunk := bytes.Repeat(append(frame(0x1, []byte(`{"type":"ping"}`)), frame(0x9, []byte("hb"))...), 1000)
	maxPending := 0
	for i := 0; i < pings; i += 2000 {
		c.write(chunk)
		maxPending = max(maxPending, s.PendingForTest())
	}
	waitForWithin(t, 3*waitLimit, "the node to read every ping", func() bool { return h.Stats().ClientFrames-before >= pings })
	maxPending = max(maxPending, s.PendingForTest())
	if maxPending > 3 {
		t.Fatalf("%d replies pending for a client that does not read, want at most 3", maxPending)
	}
	if h.Len() != 1 {
		t.Errorf("sessions = %d, want the flooder still connected until its writes time out", h.Len())
	}
}

// Handshakes that gws would refuse with a plain-text 400 get JSON errors.
func TestHandshakeErrorsAreJSON(t *testing.T) {
	_, srv, _ := testHub(t, Config{})
	good := func() http.Header {
		return http.Header{"Upgrade": {"websocket"}, "Connection": {"keep-alive, Upgrade"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}
	}
	for _, tt := range []struct {
		name   string
		method string
		edit   func(http.Header)
		status int
		want   string
	}{
		{"post", http.MethodPost, func(http.Header) {}, 405, "a WebSocket upgrade is a GET"},
		{"no upgrade", http.MethodGet, func(h http.Header) { h.Del("Upgrade") }, 400, "Upgrade: websocket"},
		{"no connection upgrade", http.MethodGet, func(h http.Header) { h.Set("Connection", "keep-alive") }, 400, "Connection: Upgrade"},
		{"old version", http.MethodGet, func(h http.Header) { h.Set("Sec-Websocket-Version", "8") }, 426, "want 13"},
		{"no key", http.MethodGet, func(h http.Header) { h.Del("Sec-Websocket-Key") }, 400, "Sec-WebSocket-Key"},
		{"short key", http.MethodGet, func(h http.Header) { h.Set("Sec-Websocket-Key", "c2hvcnQ=") }, 400, "Sec-WebSocket-Key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+"/ws", nil)
			req.Header = good()
			tt.edit(req.Header)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			err = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tt.status || err != nil || !strings.Contains(body.Error, tt.want) ||
				resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("status %d, %s, error %q (%v); want %d with a JSON error containing %q",
					resp.StatusCode, resp.Header.Get("Content-Type"), body.Error, err, tt.status, tt.want)
			}
		})
	}
}

// Beyond MaxConnections an upgrade gets 503 with a JSON error at once, and
// one warning line (not one per refusal); a freed place is taken again.
func TestConnectionLimit(t *testing.T) {
	h, srv, logs := testHub(t, Config{MaxConnections: 3})
	var held []*rawClient
	for i := range 3 {
		held = append(held, dialRaw(t, srv, "u"+string(rune('a'+i)), 0))
	}
	waitFor(t, "three sessions", func() bool { return h.Len() == 3 })
	tok, _ := newTestAuth(t).Mint("late", "", time.Hour)
	for range 5 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ws?token="+tok, nil)
		req.Header = http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body.Error, "session.max_connections") ||
			resp.Header.Get("Retry-After") == "" {
			t.Fatalf("over the limit: %d %q (Retry-After %q); want 503 naming session.max_connections",
				resp.StatusCode, body.Error, resp.Header.Get("Retry-After"))
		}
	}
	if got := h.Stats().Refused; got != 5 {
		t.Errorf("Refused = %d, want 5", got)
	}
	if n := logs.count("WARN connection limit reached: refusing new WebSockets with 503"); n != 1 {
		t.Errorf("%d limit warnings for 5 refusals within 10 s, want 1", n)
	}
	held[0].nc.Close()
	waitFor(t, "the closed session to free its place", func() bool { return h.conns.Load() == 2 })
	dialRaw(t, srv, "late", 0)
	waitFor(t, "the late session", func() bool { return h.sessionForTest("late") != nil })
}

func TestConnectionsForFileLimit(t *testing.T) {
	for _, tt := range []struct {
		files uint64
		want  int
	}{
		{100, 50},            // below twice the smallest reserve: half
		{400, 272},           // reserve 128
		{20_000, 18_000},     // reserve a tenth
		{1 << 20, 1_038_576}, // reserve capped at 10,000
	} {
		if got := connectionsFor(tt.files); got != tt.want {
			t.Errorf("connectionsFor(%d) = %d, want %d", tt.files, got, tt.want)
		}
	}
	if n := FileLimitConnections(); n < 1 {
		t.Errorf("FileLimitConnections() = %d", n)
	}
}

// A panic on one session's read loop goroutine closes that connection with
// 1011; the process and the other sessions go on.
func TestReadLoopPanicClosesOnlyThatConnection(t *testing.T) {
	h, srv, logs := testHub(t, Config{})
	h.SetReadHookForTest(func(s *Session) {
		if s.info.User == "boom" {
			panic("test panic")
		}
	})
	other := dialRaw(t, srv, "other", 0)
	boom := dialRaw(t, srv, "boom", 0)
	if code := closeCode(boom.readUntil(0x8)); code != CloseInternal {
		t.Errorf("close code %d, want %d", code, CloseInternal)
	}
	waitFor(t, "the panicked session to be gone", func() bool { return h.Len() == 1 && h.Stats().Closed == 1 })
	if n := logs.count("ERROR session read loop panicked: closing this connection"); n != 1 {
		t.Errorf("%d panic log lines, want 1", n)
	}
	if ds := h.Deliver("other", "", MessageFrame("m2", []byte(`2`))); len(ds) != 1 || ds[0].Err != nil {
		t.Fatalf("deliver to other: %+v", ds)
	}
	if _, p := other.read(); !bytes.Contains(p, []byte(`"m2"`)) {
		t.Errorf("other got %q, want message m2", p)
	}
}

// TestCloseReachesAFloodingClient: a client that keeps sending past its
// rate limit, and reads only afterwards, still finds the 4008 close frame
// in its socket. The server sends the close, shuts its write side and
// keeps reading until the client is done, instead of closing at once:
// data still arriving at a closed socket makes the kernel answer with a
// reset, which discards the close frame waiting in the client's buffer.
func TestCloseReachesAFloodingClient(t *testing.T) {
	for round := range 5 {
		h, srv, _ := testHub(t, Config{MaxClientRate: 10})
		c := dialRaw(t, srv, fmt.Sprintf("flood%d", round), 0)
		waitFor(t, "the session", func() bool { return h.Len() == 1 })
		chunk := bytes.Repeat(frame(0x1, []byte(`{"type":"ping"}`)), 100)
		for i := range 20 { // 2000 frames: far past the burst of 20; most land after the close
			if _, err := c.nc.Write(chunk); err != nil {
				// What a client library sees when the server closes at once:
				// its own send fails (reset, broken pipe) and it gives up
				// without reading the close frame.
				t.Fatalf("round %d: write %d failed: %v", round, i, err)
			}
			time.Sleep(time.Millisecond) // a client sending at its own pace, not synchronisation
		}
		// Only now read: pongs, then the close frame.
		p := c.readUntil(0x8)
		if closeCode(p) != CloseTooMany || string(p[2:]) != "too many messages" {
			t.Fatalf("round %d: got close %q, want 4008 too many messages", round, p)
		}
	}
}
