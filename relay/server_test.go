package relay

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"wsmesh/internal/testsupport"
)

// sendBody is a valid /send body, to a user with no session.
const sendBody = `{"users":["nobody"],"data":1}`

// newMuxTestServer serves a Server with API key "k1", a /metrics handler
// and one extra route, GET /demo/, and returns its address.
func newMuxTestServer(t *testing.T) string {
	t.Helper()
	s, _ := newTestServer(t, Config{
		APIKeys: []string{"k1"},
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics 1\n") }),
		Routes: map[string]http.Handler{
			"GET /demo/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "demo") }),
		},
	})
	return startTestHTTP(t, s, nil)
}

// do sends method path to addr with an Authorization header (if auth is
// not empty) and body, and returns the answer and its body.
func do(t *testing.T, addr, method, path, auth, body string) (*http.Response, string) {
	t.Helper()
	var h http.Header
	if auth != "" {
		h = http.Header{"Authorization": {auth}}
	}
	return testsupport.Do(t, method, "http://"+addr+path, h, body)
}

// checkAnswer fails unless resp has status, Allow header allow, and a body
// holding has; error answers must be JSON {"error": ...} (a HEAD answer has
// no body to check).
func checkAnswer(t *testing.T, resp *http.Response, body string, status int, allow, has string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %q", resp.StatusCode, status, body)
	}
	if got := resp.Header.Get("Allow"); got != allow {
		t.Fatalf("Allow %q, want %q", got, allow)
	}
	if resp.Request.Method == http.MethodHead {
		if body != "" {
			t.Fatalf("HEAD answered a body: %q", body)
		}
	} else if !strings.Contains(body, has) {
		t.Fatalf("body %q, want it to hold %q", body, has)
	}
	if status < 400 {
		return
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q of an error, want application/json", ct)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); resp.Request.Method != http.MethodHead && (err != nil || e.Error == "") {
		t.Fatalf("answer is not {\"error\": ...}: %q (%v)", body, err)
	}
}

// TestEndpointMethods: every API endpoint answers its own method (a GET
// endpoint HEAD too) and every other method with a JSON 405 whose Allow
// header names its method; the method is checked before the API key.
func TestEndpointMethods(t *testing.T) {
	addr := newMuxTestServer(t)
	endpoints := []struct {
		method, path string
		ok           string // what the answer to the right method holds
	}{
		{"POST", "/send", `"offline":1`},
		{"GET", "/healthz", `{"status":"ok"}`},
		{"GET", "/readyz", `{"status":"ready"}`},
		{"GET", "/cluster", `"node":"n1"`},
		{"GET", "/metrics", "metrics 1"},
	}
	methods := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
	for _, ep := range endpoints {
		for _, method := range methods {
			t.Run(method+" "+ep.path, func(t *testing.T) {
				resp, body := do(t, addr, method, ep.path, "", sendBody)
				if method != ep.method && !(ep.method == "GET" && method == "HEAD") {
					checkAnswer(t, resp, body, http.StatusMethodNotAllowed, ep.method, "method "+method+" not allowed; use "+ep.method)
					return
				}
				if ep.path != "/healthz" && ep.path != "/readyz" { // the others need the key
					checkAnswer(t, resp, body, http.StatusUnauthorized, "", "missing or wrong API key")
					if resp.Header.Get("WWW-Authenticate") != `Bearer realm="wsmesh"` {
						t.Fatalf("401 with WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
					}
					resp, body = do(t, addr, method, ep.path, "Bearer k1", sendBody)
				}
				checkAnswer(t, resp, body, http.StatusOK, "", ep.ok)
			})
		}
	}
}

// TestAPIKeyHeader: the key goes in "Authorization: Bearer <key>", the
// scheme in any case, the key trimmed.
func TestAPIKeyHeader(t *testing.T) {
	addr := newMuxTestServer(t)
	cases := []struct {
		auth   string
		status int
	}{
		{"Bearer k1", 200},
		{"bearer  k1 ", 200},
		{"BEARER k1", 200},
		{"Bearer k2", 401},
		{"Bearer ", 401},
		{"Bearerk1", 401},
		{"Basic k1", 401},
	}
	for _, tc := range cases {
		t.Run(tc.auth, func(t *testing.T) {
			resp, body := do(t, addr, "POST", "/send", tc.auth, sendBody)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %q", resp.StatusCode, tc.status, body)
			}
		})
	}
	// No keys configured: the API is open.
	open, _ := newTestServer(t, Config{})
	if resp, body := do(t, startTestHTTP(t, open, nil), "POST", "/send", "", sendBody); resp.StatusCode != 200 {
		t.Fatalf("no keys configured: %d %q", resp.StatusCode, body)
	}
}

// TestOtherPaths: paths that are no endpoint answer a JSON 404; GET /ws is
// the hub's, which answers its own JSON errors; an extra route keeps
// ServeMux's method matching (HEAD with GET; another method is no route,
// a 404); GET /metrics is a 404 when no Metrics handler is configured.
func TestOtherPaths(t *testing.T) {
	addr := newMuxTestServer(t)
	bare, _ := newTestServer(t, Config{})
	cases := []struct {
		name, method, path string
		status             int
		allow, has         string
	}{
		{"trailing slash", "POST", "/send/", 404, "", "no such endpoint: /send/"},
		{"below an endpoint", "GET", "/healthz/x", 404, "", "no such endpoint: /healthz/x"},
		{"root", "GET", "/", 404, "", "no such endpoint: /"},
		{"hub: wrong method", "PUT", "/ws", 405, "GET", "a WebSocket upgrade is a GET"},
		{"hub: no upgrade", "GET", "/ws", 400, "", "websocket upgrade required"},
		{"route", "GET", "/demo/", 200, "", "demo"},
		{"route, HEAD", "HEAD", "/demo/", 200, "", ""},
		{"route, other method", "POST", "/demo/", 404, "", "no such endpoint: /demo/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, addr, tc.method, tc.path, "Bearer k1", "")
			checkAnswer(t, resp, body, tc.status, tc.allow, tc.has)
		})
	}
	resp, body := do(t, startTestHTTP(t, bare, nil), "GET", "/metrics", "", "")
	checkAnswer(t, resp, body, http.StatusNotFound, "", "no such endpoint: /metrics")
}

// TestHandlePatternMustNameAMethod: handle is for "METHOD /path" patterns
// only; anything else is a programming error, caught at New.
func TestHandlePatternMustNameAMethod(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	for _, pattern := range []string{"/x", "GET", "GET x", " /x"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("handle(%q) did not panic", pattern)
				}
			}()
			s.handle(pattern, http.NotFoundHandler())
		}()
	}
}

// TestReadyz: GET /readyz answers what Config.Readiness says, with no key:
// 200 {"status":"ready"}, or 503 {"status":"not ready","reasons":[...]};
// HEAD works; the answer is never cached. No Readiness: always ready.
func TestReadyz(t *testing.T) {
	var mu sync.Mutex
	ready, reasons := false, []string{"no session table from n2 yet", "shutting down"}
	s, _ := newTestServer(t, Config{APIKeys: []string{"k1"}, Readiness: func() (bool, []string) {
		mu.Lock()
		defer mu.Unlock()
		return ready, reasons
	}})
	addr := startTestHTTP(t, s, nil)

	resp, body := do(t, addr, "GET", "/readyz", "", "")
	if resp.StatusCode != http.StatusServiceUnavailable || body != `{"status":"not ready","reasons":["no session table from n2 yet","shutting down"]}`+"\n" {
		t.Fatalf("not ready: %d %q", resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store", cc)
	}
	if resp, body := do(t, addr, "HEAD", "/readyz", "", ""); resp.StatusCode != http.StatusServiceUnavailable || body != "" {
		t.Fatalf("HEAD, not ready: %d %q", resp.StatusCode, body)
	}

	mu.Lock()
	ready, reasons = true, nil
	mu.Unlock()
	resp, body = do(t, addr, "GET", "/readyz", "", "")
	if resp.StatusCode != http.StatusOK || body != `{"status":"ready"}`+"\n" {
		t.Fatalf("ready: %d %q", resp.StatusCode, body)
	}
	if resp, _ := do(t, addr, "HEAD", "/readyz", "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD, ready: %d", resp.StatusCode)
	}

	bare, _ := newTestServer(t, Config{})
	if resp, body := do(t, startTestHTTP(t, bare, nil), "GET", "/readyz", "", ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"ready"`) {
		t.Fatalf("no Readiness: %d %q", resp.StatusCode, body)
	}
}
