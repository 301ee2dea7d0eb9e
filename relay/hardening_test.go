package relay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"wsmesh/session"
)

// waitLimit bounds every awaited event.
const waitLimit = 10 * time.Second

// logBuffer collects log lines, and passes them to t.Logf.
type logBuffer struct {
	mu  sync.Mutex
	tb  testing.TB
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if len(p) > 2048 {
		l.tb.Logf("%s… (%d bytes)", p[:2048], len(p))
	} else {
		l.tb.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// newTestServer returns a Server with a hub of its own (tokens from
// testAuth), on a fake single-node cluster "n1" unless cfg.Cluster is set,
// with small limits (MaxBodyBytes 4096, MaxUsersPerSend 8) unless cfg sets
// others, and the log it writes (to t.Logf too) unless cfg.Logger is set.
func newTestServer(tb testing.TB, cfg Config) (*Server, *logBuffer) {
	tb.Helper()
	logs := &logBuffer{tb: tb}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hub, err := session.New(session.Config{Auth: testAuth(tb), Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Hub = hub
	if cfg.Cluster == nil {
		cfg.Cluster = &fakeCluster{}
	}
	if cfg.Logger == nil {
		cfg.Logger = log
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 4096
	}
	if cfg.MaxUsersPerSend == 0 {
		cfg.MaxUsersPerSend = 8
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s, logs
}

// post sends body to s's /send in process and returns the status and the
// JSON answer.
func post(tb testing.TB, s *Server, body string) (int, map[string]any) {
	tb.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/send", strings.NewReader(body)))
	var out map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		tb.Fatalf("answer is not JSON (%v): %q", err, w.Body.Bytes())
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("Content-Type %q", ct)
	}
	return w.Code, out
}

func TestSendStrictFields(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	cases := []struct {
		name, body string
		status     int
		err        string // the whole error answer; "" for 200
	}{
		{"upper-case users", `{"USERS":["42"],"data":1}`, 400,
			`malformed JSON: unknown field "USERS" (field names are case-sensitive: did you mean "users"?)`},
		{"title-case data", `{"users":["42"],"Data":1}`, 400,
			`malformed JSON: unknown field "Data" (field names are case-sensitive: did you mean "data"?)`},
		{"unknown field", `{"users":["42"],"data":1,"user":"x"}`, 400, `malformed JSON: unknown field "user"`},
		{"duplicate users", `{"users":["42"],"users":["7"],"data":1}`, 400, `duplicate field "users"`},
		{"duplicate data", `{"users":["42"],"data":1,"data":2}`, 400, `duplicate field "data"`},
		{"duplicate device", `{"device":"a","users":["42"],"device":"b","data":1}`, 400, `duplicate field "device"`},
		{"trailing object", `{"users":["42"],"data":1} {}`, 400, `malformed JSON: unexpected data after the body's object`},
		{"trailing garbage", `{"users":["42"],"data":1}x`, 400, `malformed JSON: unexpected data after the body's object`},
		{"users a string", `{"users":"42","data":1}`, 400, `wrong type: "users" must be an array of strings, got a JSON string`},
		{"user a number", `{"users":[42],"data":1}`, 400, `wrong type: "users" must be an array of strings, but an element is a JSON number`},
		{"device a bool", `{"users":["42"],"device":true,"data":1}`, 400, `wrong type: "device" must be a string, got a JSON bool`},
		{"an array", `[1,2]`, 400, `malformed JSON: the body must be a JSON object (got a JSON array)`},
		{"a string", `"x"`, 400, `malformed JSON: the body must be a JSON object (got a JSON string)`},
		{"empty", ``, 400, `malformed JSON: empty body`},
		{"blank", " \n", 400, `malformed JSON: empty body`},
		{"truncated", `{"users":["42"],"data":`, 400, `malformed JSON: unexpected EOF`},
		{"open brace", `{`, 400, `malformed JSON: unexpected EOF`},
		{"trailing comma", `{"users":["42"],"data":1,}`, 400, `malformed JSON: invalid character '}' looking for beginning of object key string`},
		{"null data", `{"users":["42"],"data":null}`, 400, `no data: "data" must be a JSON value other than null`},
		{"null users", `{"users":null,"data":1}`, 400, `no users: give "users" (user ids) or "sessions" (session ids)`},
		// Nested objects in data are raw: their keys are the sender's business.
		{"data keys untouched", `{"users":["42"],"data":{"USERS":1,"a":1,"a":2}}`, 200, ""},
		{"escaped key", `{"us\u0065rs":["42"],"data":1}`, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := post(t, s, tc.body)
			if code != tc.status {
				t.Fatalf("status %d, want %d (%v)", code, tc.status, out)
			}
			if got, _ := out["error"].(string); got != tc.err {
				t.Fatalf("error %q\nwant  %q", got, tc.err)
			}
		})
	}
}

func TestSendInvalidUTF8(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	cases := []struct {
		name, body string
		offset     string // "" for valid UTF-8
	}{
		{"0xff in data", "{\"users\":[\"42\"],\"data\":\"a\xffb\"}", "25"},
		{"0xff in a user", "{\"users\":[\"4\xff\"],\"data\":1}", "12"},
		{"0xff in a key", "{\"u\xffsers\":[\"42\"],\"data\":1}", "3"},
		{"truncated sequence", "{\"users\":[\"42\"],\"data\":\"\xe2\x82\"}", "24"},
		{"surrogate half", "{\"users\":[\"42\"],\"data\":\"\xed\xa0\x80\"}", "24"},
		{"overlong", "{\"users\":[\"42\"],\"data\":\"\xc0\xaf\"}", "24"},
		{"valid multibyte", `{"users":["ü"],"data":"€ 𝄞 �"}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := post(t, s, tc.body)
			if tc.offset == "" {
				if code != 200 {
					t.Fatalf("status %d, want 200 (%v)", code, out)
				}
				return
			}
			want := "body is not valid UTF-8 (first bad byte at offset " + tc.offset + ")"
			if code != 400 || out["error"] != want {
				t.Fatalf("got %d %v, want 400 %q", code, out, want)
			}
		})
	}
}

func TestLongPathClipped(t *testing.T) {
	s, logs := newTestServer(t, Config{})
	long := "/" + strings.Repeat("a", 1<<20-1)
	for _, method := range []string{"GET", "POST", strings.Repeat("X", 4096)} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		r.Method, r.URL.Path, r.RequestURI = method, long, long
		s.ServeHTTP(w, r)
		if w.Code != 404 || w.Body.Len() > 1024 {
			t.Fatalf("%.10s %s…: %d, %d-byte answer %.300q", method, long[:10], w.Code, w.Body.Len(), w.Body.String())
		}
		if !strings.Contains(w.Body.String(), "…(1048576 bytes)") {
			t.Fatalf("answer %q does not give the path's length", w.Body.String())
		}
	}
	// An unknown field name and a wrong-typed value are client strings too.
	for _, body := range []string{
		`{"` + strings.Repeat("k", 2000) + `":1}`,
		`{"users":` + strings.Repeat("9", 2000) + `,"data":1}`,
		`{"users":["a"],"data":1,"device":"` + strings.Repeat("d", 2000) + `"}`, // logged at Debug
	} {
		code, out := post(t, s, body)
		if msg, _ := out["error"].(string); len(msg) > 400 {
			t.Fatalf("%d: %d-byte error %.300q", code, len(msg), msg)
		}
	}
	for line := range strings.Lines(logs.String()) {
		if len(line) > 1024 {
			t.Fatalf("%d-byte log line: %.300q", len(line), line)
		}
	}
	if !strings.Contains(logs.String(), "…(1048576 bytes)") {
		t.Fatal("no log line gives the clipped path's length")
	}
}

func TestClip(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{strings.Repeat("a", 256), strings.Repeat("a", 256)},
		{strings.Repeat("a", 257), strings.Repeat("a", 256) + "…(257 bytes)"},
		// A rune across byte 256 is left out whole.
		{strings.Repeat("a", 255) + "€" + "b", strings.Repeat("a", 255) + "…(259 bytes)"},
	}
	for _, tc := range cases {
		if got := clip(tc.in); got != tc.want {
			t.Errorf("clip(%d bytes) = %q, want %q", len(tc.in), got, tc.want)
		}
	}
}

// startTestHTTP serves s on a real listener, with the server's settings
// adjusted by tune, and returns its address.
func startTestHTTP(t *testing.T, s *Server, tune func(*http.Server)) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(s)
	if tune != nil {
		tune(ts.Config)
	}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// rawRequest writes req on a new TCP connection and returns the answer,
// read within waitLimit.
func rawRequest(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	conn := rawSend(t, addr, req)
	return readAnswer(t, conn)
}

func rawSend(t *testing.T, addr, req string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	return conn
}

func readAnswer(t *testing.T, conn net.Conn) *http.Response {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(waitLimit)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// jsonError checks that resp is a JSON error answer with status and
// returns its error.
func jsonError(t *testing.T, resp *http.Response, status int) string {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %q", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json: %q", ct, body)
	}
	var out struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Error == "" {
		t.Fatalf("answer is not {\"error\": ...}: %q (%v)", body, err)
	}
	return out.Error
}

// stalledSend is a /send request whose body never comes.
const stalledSend = "POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"

func TestStalledBodyTimesOut(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	const readTimeout = 300 * time.Millisecond
	addr := startTestHTTP(t, s, func(hs *http.Server) { hs.ReadTimeout = readTimeout })
	start := time.Now()
	resp := rawRequest(t, addr, stalledSend)
	msg := jsonError(t, resp, http.StatusRequestTimeout)
	if want := "request body not received in time (http.read_timeout)"; msg != want {
		t.Fatalf("error %q, want %q", msg, want)
	}
	if took := time.Since(start); took < readTimeout {
		t.Fatalf("answered after %s, before the %s read timeout", took, readTimeout)
	}
	// Part of a body, then nothing: the same.
	resp = rawRequest(t, addr, stalledSend+`{"users":["a"],`)
	jsonError(t, resp, http.StatusRequestTimeout)
}

// liveBodyReads is how many body reads CutBodyReads would cut now.
func (s *Server) liveBodyReads() int {
	s.reads.mu.Lock()
	defer s.reads.mu.Unlock()
	return len(s.reads.live)
}

func TestCutBodyReads(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	addr := startTestHTTP(t, s, nil) // no ReadTimeout: only CutBodyReads ends the reads
	var conns []net.Conn
	for range 3 {
		conns = append(conns, rawSend(t, addr, stalledSend+`{"users":`))
	}
	waitUntil(t, "three body reads in progress", func() bool { return s.liveBodyReads() == 3 })

	start := time.Now()
	s.CutBodyReads(0)
	s.CutBodyReads(time.Hour) // safe twice: the first deadline stays
	for _, c := range conns {
		msg := jsonError(t, readAnswer(t, c), http.StatusServiceUnavailable)
		if want := "node shutting down: request body not received in time"; msg != want {
			t.Fatalf("error %q, want %q", msg, want)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("cut reads answered after %s", took)
	}
	if n := s.liveBodyReads(); n != 0 {
		t.Fatalf("%d body reads still registered", n)
	}
	// A body read that starts after the deadline fails at once, whole body or not.
	jsonError(t, rawRequest(t, addr, stalledSend), http.StatusServiceUnavailable)
	code, out := post(t, s, `{"users":["a"],"data":1}`)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("after the cut: %d %v", code, out)
	}
	// Requests without a body are still answered.
	resp := rawRequest(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("healthz after the cut: %d", resp.StatusCode)
	}
}

// waitUntil polls cond every 2ms until it holds, failing after waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitLimit, what)
		}
		<-tick.C
	}
}

func TestOddRequestsAnswerJSON(t *testing.T) {
	s, _ := newTestServer(t, Config{Routes: map[string]http.Handler{
		"GET /demo/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "demo") }),
	}})
	// Go answers OPTIONS * itself unless told not to: let it reach relay.
	addr := startTestHTTP(t, s, func(hs *http.Server) { hs.DisableGeneralOptionsHandler = true })
	cases := []struct {
		name, req string
		status    int
		errHas    string
		allow     bool
	}{
		{"CONNECT authority-form", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, "not a proxy", true},
		{"CONNECT a path", "CONNECT /send HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not a proxy", true},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400, `"*"`, false},
		{"GET *", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, `"*"`, false},
		{"absolute-form, no path", "GET http://x HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint", false},
		{"double slash", "POST //send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 404, "did you mean /send?", false},
		{"dot-dot", "POST /send/../send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 404, "did you mean /send?", false},
		{"dot", "GET /./healthz HTTP/1.1\r\nHost: x\r\n\r\n", 404, "did you mean /healthz?", false},
		{"demo tree unclean", "GET /demo/../demo/ HTTP/1.1\r\nHost: x\r\n\r\n", 404, "did you mean /demo/?", false},
		{"unknown path", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint: /nope", false},
		{"POST to a GET route", "POST /demo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 404, "no such endpoint", false},
		{"DELETE /send", "DELETE /send HTTP/1.1\r\nHost: x\r\n\r\n", 405, "use POST", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := rawRequest(t, addr, tc.req)
			msg := jsonError(t, resp, tc.status)
			if !strings.Contains(msg, tc.errHas) {
				t.Fatalf("error %q, want it to mention %q", msg, tc.errHas)
			}
			if tc.allow != (resp.Header.Get("Allow") != "") {
				t.Fatalf("Allow %q", resp.Header.Get("Allow"))
			}
		})
	}
}
