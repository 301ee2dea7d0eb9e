package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// TestClientUnit runs every *.test.mjs here (wsmesh.test.mjs: the client's
// logic; wx.test.mjs: the mini-program adapter) with node's test runner, so
// that go test covers them. Without node it skips, or fails on CI, like the
// repo's requireTool.
func TestClientUnit(t *testing.T) {
	node := requireNode(t)
	files, err := filepath.Glob("*.test.mjs")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %v, want wsmesh.test.mjs and wx.test.mjs at least", files)
	}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, node, "--test", file).CombinedOutput()
			if err != nil {
				t.Fatalf("node --test %s: %v\n%s", file, err, out)
			}
			t.Logf("node --test %s:\n%s", file, tail(string(out), 9))
		})
	}
}

// requireNode returns the path of node, or skips the test without it (fails
// on CI, where .ci/run installs it).
func requireNode(t *testing.T) string {
	t.Helper()
	return requireTool(t, "node", "node not installed (apt-get install nodejs; .ci/run installs it)")
}

func requireTool(t *testing.T, name, msg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// TestPackageFiles checks what the npm package (package.json) ships:
// npm pack --dry-run must list exactly the client, the mini-program adapter,
// their declarations and package.json, and every export must name a file
// that ships.
func TestPackageFiles(t *testing.T) {
	npm := requireTool(t, "npm", "npm not installed (apt-get install npm; .ci/run installs it)")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "pack", "--dry-run", "--json", "--ignore-scripts")
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("npm pack --dry-run: %v\n%s%s", err, out, stderr.String())
	}
	var packs []struct {
		Name, Version string
		Files         []struct{ Path string }
	}
	if err := json.Unmarshal(out, &packs); err != nil || len(packs) != 1 {
		t.Fatalf("npm pack --dry-run --json: %v, %d packages\n%s", err, len(packs), out)
	}
	var got []string
	for _, f := range packs[0].Files {
		got = append(got, f.Path)
	}
	slices.Sort(got)
	want := []string{"package.json", "wsmesh.d.ts", "wsmesh.js", "wx.d.ts", "wx.js"}
	if !slices.Equal(got, want) {
		t.Errorf("npm pack ships %v, want %v", got, want)
	}

	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Name, Main, Types string
		Private           bool
		Exports           map[string]json.RawMessage
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	if pkg.Private || pkg.Name != packs[0].Name {
		t.Errorf("package.json: name %q private %v", pkg.Name, pkg.Private)
	}
	shipped := func(p string) bool { return slices.Contains(want, strings.TrimPrefix(p, "./")) }
	for _, p := range []string{pkg.Main, pkg.Types} {
		if !shipped(p) {
			t.Errorf("package.json: main/types %q does not ship", p)
		}
	}
	for _, sub := range []string{".", "./wx"} {
		var cond struct{ Types, Default string }
		if err := json.Unmarshal(pkg.Exports[sub], &cond); err != nil || !shipped(cond.Types) || !shipped(cond.Default) {
			t.Errorf("package.json: exports[%q] = %s, want types and default naming shipped files", sub, pkg.Exports[sub])
		}
	}
}

// TestTypes compiles types-check.ts, a use of the package's public API
// through its exports, against wsmesh.d.ts and wx.d.ts with tsc --strict.
// It skips without tsc (on PATH, or in e2e/node_modules: see
// "Clients: browser, Android, mini-programs" in README.md).
func TestTypes(t *testing.T) {
	tsc, err := filepath.Abs(filepath.Join("e2e", "node_modules", ".bin", "tsc"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tsc); err != nil {
		if tsc, err = exec.LookPath("tsc"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("tsc not installed: npm ci in web/e2e installs it (a devDependency)")
			}
			t.Skip("tsc not installed: run npm ci in web/e2e (typescript is its devDependency), or put tsc on PATH")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, tsc, tscArgs...).CombinedOutput()
	if err != nil {
		t.Fatalf("tsc %s: %v\n%s", strings.Join(tscArgs, " "), err, out)
	}
}

// tscArgs check types-check.ts as an ES module of this package (package.json
// "type": "module"), resolving "wsmesh-client" through its exports.
var tscArgs = []string{"--noEmit", "--strict", "--target", "es2020", "--lib", "es2020,dom",
	"--module", "nodenext", "--moduleResolution", "nodenext", "types-check.ts"}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
