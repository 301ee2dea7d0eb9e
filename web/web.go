// Package web is the browser side of wsmesh: wsmesh.js, a dependency-free
// JavaScript client that heartbeats, reconnects and follows the server's
// close codes, and the demo page that uses it. A node serves both at /demo/
// when http.demo allows it; the files are embedded in the binary.
//
// wsmesh.test.mjs unit-tests the client (node --test web/); e2e/ drives the
// demo page in headless Chromium for the repo's browser_test.go.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"wsmesh/internal/httpx"
)

//go:embed index.html wsmesh.js
var files embed.FS

// Prefix is where Demo expects to be mounted.
const Prefix = "/demo/"

// asset is one served file.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// assets maps the path below Prefix to its file; "" is the page.
var assets = func() map[string]asset {
	m := map[string]asset{}
	for _, f := range []struct{ path, name, ctype string }{
		{"", "index.html", "text/html; charset=utf-8"},
		{"wsmesh.js", "wsmesh.js", "text/javascript; charset=utf-8"},
	} {
		b, err := files.ReadFile(f.name)
		if err != nil {
			panic(err) // embedded above: cannot happen
		}
		sum := sha256.Sum256(b)
		m[f.path] = asset{body: b, contentType: f.ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return m
}()

// Demo serves the demo page, mounted at Prefix ("GET /demo/"): /demo/ is the
// page and /demo/wsmesh.js the client. Anything else below /demo/ is 404,
// including /demo/index.html (there is no directory listing). Mounted at
// "GET /demo" too, it redirects /demo to /demo/, keeping the query (?token=).
// Answers carry an ETag and Cache-Control: no-cache, so a new binary's files
// are picked up at once.
func Demo() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use GET")
			return
		}
		if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
			target := Prefix
			if r.URL.RawQuery != "" {
				target += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, target, http.StatusMovedPermanently)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		a, found := assets[name]
		if !ok || !found {
			writeError(w, http.StatusNotFound, "no such file: "+r.URL.Path)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer") // the page URL may carry ?token=
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}

// writeError answers {"error": msg}, like the rest of the node's API.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	httpx.WriteError(w, status, msg)
}
