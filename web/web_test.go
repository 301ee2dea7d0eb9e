package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
)

// newServer mounts Demo the way the node does.
func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	demo := Demo()
	mux.Handle("GET /demo", demo)
	mux.Handle("GET /demo/", demo)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	return testsupport.Do(t, method, url, header, "")
}

func TestDemoServesFiles(t *testing.T) {
	srv := newServer(t)
	for _, tc := range []struct {
		path, ctype, contains string
		file                  string
	}{
		{"/demo/", "text/html; charset=utf-8", `import { WsMesh } from './wsmesh.js'`, "index.html"},
		{"/demo/?token=abc", "text/html; charset=utf-8", "<title>wsmesh demo</title>", "index.html"},
		{"/demo/wsmesh.js", "text/javascript; charset=utf-8", "export class WsMesh", "wsmesh.js"},
	} {
		resp, body := get(t, "GET", srv.URL+tc.path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", tc.path, resp.StatusCode, body)
		}
		if got := resp.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.ctype)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", tc.path, got)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q", tc.path, got)
		}
		if !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		want, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if body != string(want) {
			t.Errorf("GET %s: body is not %s", tc.path, tc.file)
		}

		// Revalidation: the ETag answers 304.
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Fatalf("GET %s: no ETag", tc.path)
		}
		resp, body = get(t, "GET", srv.URL+tc.path, http.Header{"If-None-Match": {etag}})
		if resp.StatusCode != http.StatusNotModified || body != "" {
			t.Errorf("GET %s with If-None-Match: %d %q, want 304", tc.path, resp.StatusCode, body)
		}
		resp, body = get(t, "HEAD", srv.URL+tc.path, nil)
		if resp.StatusCode != http.StatusOK || body != "" || resp.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("HEAD %s: %d %q %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}

func TestDemoNotFound(t *testing.T) {
	srv := newServer(t)
	for _, p := range []string{"/demo/nope", "/demo/index.html", "/demo/web.go", "/demo/wsmesh.test.mjs", "/demo/e2e/", "/demo/e2e/browser.mjs", "/demo/wsmesh.js/", "/demo//wsmesh.js", "/demo/%2e%2e/web.go"} {
		resp, body := get(t, "GET", srv.URL+p, nil)
		if resp.StatusCode == http.StatusOK {
			t.Errorf("GET %s: 200, want no file", p)
			continue
		}
		if resp.StatusCode/100 == 3 { // ServeMux redirects to the cleaned path first
			continue
		}
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
		var e map[string]string
		if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e["error"], "no such file") {
			t.Errorf("GET %s: body %q, want a JSON error", p, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s: Content-Type %q", p, ct)
		}
	}
}

func TestDemoRedirectKeepsQuery(t *testing.T) {
	srv := newServer(t)
	resp, _ := get(t, "GET", srv.URL+"/demo?token=a.b.c&nodes=x:1", nil)
	if resp.StatusCode != http.StatusMovedPermanently {
		t.Fatalf("GET /demo: %d, want 301", resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); loc != "/demo/?token=a.b.c&nodes=x:1" {
		t.Fatalf("GET /demo: Location %q", loc)
	}
}

func TestDemoMethods(t *testing.T) {
	// Called directly: the node's mux would answer 404 before Demo sees a POST.
	rec := httptest.NewRecorder()
	Demo().ServeHTTP(rec, httptest.NewRequest("POST", "/demo/", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /demo/: %d Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

// TestClientUnit runs wsmesh.test.mjs (the client's logic) with node's
// test runner, so that go test covers it. Without node it skips, or fails
// on CI, like the repo's requireTool.
func TestClientUnit(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		msg := "node not installed (apt-get install nodejs; .ci/run installs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "wsmesh.test.mjs")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test wsmesh.test.mjs: %v\n%s", err, out)
	}
	t.Logf("node --test wsmesh.test.mjs:\n%s", tail(string(out), 9))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
