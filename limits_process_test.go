package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
)

// At the open-file limit the node went silent: /healthz and new upgrades
// timed out, with no refusal and no log line. Under `prlimit --nofile=400`
// the default session.max_connections keeps a reserve: beyond it upgrades
// get a quick 503, while /healthz and the API keep answering, and one
// warning line says so.
func TestProcessConnectionLimitUnderFileLimit(t *testing.T) {
	prlimit := testsupport.RequireTool(t, "prlimit", "util-linux")
	bin := buildBinary(t)
	p := newProcNode(t, t.TempDir(), "lim1", "")
	p.prefix = []string{prlimit, "--nofile=400:400"}
	p.start(t, bin)

	lines, _ := p.readLog(t)
	limit := -1
	for _, m := range lines {
		if m["msg"] == "node serving" {
			limit = int(m["max_connections"].(float64))
		}
	}
	if limit != 272 { // 400 files less a reserve of 128
		t.Fatalf("max_connections = %d under a file limit of 400, want 272", limit)
	}

	accepted, refused := 0, 0
	for i := range 500 {
		start := time.Now()
		c, resp, err := p.api.TryDial(p.api.Token(t, fmt.Sprintf("u%d", i), ""), testsupport.DialOpts{Silent: true})
		switch {
		case err == nil:
			accepted++
			t.Cleanup(c.Close)
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
			refused++
		default:
			t.Fatalf("dial %d: %v (after %d accepted, %d refused)\n%s", i, err, accepted, refused, p.logTail(10))
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("dial %d took %s: the node should answer at once", i, took)
		}
	}
	if accepted != limit || refused != 500-limit {
		t.Fatalf("%d accepted, %d refused; want %d and %d", accepted, refused, limit, 500-limit)
	}
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + p.http + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz at the limit: %v %v", resp, err)
	}
	resp.Body.Close()
	if got := p.api.Send(t, `{"users":["u0"],"data":"still here"}`); got["delivered"] != 1.0 {
		t.Fatalf("/send at the limit: %v", got)
	}
	warnings := 0
	lines, _ = p.readLog(t)
	for _, m := range lines {
		if msg, _ := m["msg"].(string); strings.HasPrefix(msg, "connection limit reached") {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("%d limit warnings for %d refusals within seconds, want 1", warnings, refused)
	}
}
