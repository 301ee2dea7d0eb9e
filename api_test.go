package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

func TestAPIErrors(t *testing.T) {
	cfg := nodetest.Config(t)
	cfg.HTTP.MaxBodyBytes = 2048
	cfg.HTTP.MaxUsersPerSend = 3
	tn := nodetest.Start(t, cfg)
	c := tn.Dial(t, tn.Token(t, "u1", ""), testsupport.DialOpts{})
	testsupport.WaitFor(t, "session registered", func() bool { return tn.Hub().Len() == 1 })

	key := "Bearer " + testsupport.APIKey
	cases := []struct {
		name, method, path, body, auth string
		status                         int
		errHas                         string
	}{
		{"GET /send", "GET", "/send", "", key, 405, "use POST"},
		{"PUT /cluster", "PUT", "/cluster", "", key, 405, "use GET"},
		{"no key", "POST", "/send", `{"users":["u1"],"data":1}`, "", 401, "API key"},
		{"wrong key", "POST", "/send", `{"users":["u1"],"data":1}`, "Bearer nope", 401, "API key"},
		{"wrong scheme", "POST", "/send", `{"users":["u1"],"data":1}`, "Basic " + testsupport.APIKey, 401, "API key"},
		{"cluster no key", "GET", "/cluster", "", "", 401, "API key"},
		{"malformed", "POST", "/send", `{"users":["u1"],"data":`, key, 400, "malformed JSON"},
		{"empty body", "POST", "/send", ``, key, 400, "empty body"},
		{"not an object", "POST", "/send", `[1,2]`, key, 400, "malformed JSON"},
		{"users wrong type", "POST", "/send", `{"users":"u1","data":1}`, key, 400, "users"},
		{"unknown field", "POST", "/send", `{"users":["u1"],"data":1,"user":"x"}`, key, 400, "unknown field"},
		{"trailing data", "POST", "/send", `{"users":["u1"],"data":1} {}`, key, 400, "after"},
		{"no users", "POST", "/send", `{"users":[],"data":1}`, key, 400, "no users"},
		{"users missing", "POST", "/send", `{"data":1}`, key, 400, "no users"},
		{"empty user", "POST", "/send", `{"users":["u1",""],"data":1}`, key, 400, "users[1]"},
		{"no data", "POST", "/send", `{"users":["u1"]}`, key, 400, "no data"},
		{"null data", "POST", "/send", `{"users":["u1"],"data":null}`, key, 400, "no data"},
		{"too many users", "POST", "/send", `{"users":["a","b","c","d"],"data":1}`, key, 400, "too many users"},
		{"body too large", "POST", "/send", `{"users":["u1"],"data":"` + strings.Repeat("x", 4096) + `"}`, key, 413, "max_body_bytes"},
		{"unknown path", "GET", "/nope", "", key, 404, "no such endpoint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, hdr := tn.APIAuth(t, tc.method, tc.path, tc.body, tc.auth)
			if code != tc.status {
				t.Fatalf("status %d, want %d (%v)", code, tc.status, out)
			}
			msg, _ := out["error"].(string)
			if !strings.Contains(msg, tc.errHas) {
				t.Fatalf("error %q, want it to mention %q", msg, tc.errHas)
			}
			if code == 405 && hdr.Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	// Bad requests changed nothing: the client's first frame is the good one.
	tn.Send(t, `{"users":["u1"],"data":"first"}`)
	if f := c.Next(t); f["data"] != "first" {
		t.Fatalf("client got %v first, want the only valid message", f)
	}
}

func TestHealthzAndCluster(t *testing.T) {
	tn := nodetest.Start(t, nodetest.Config(t))
	code, out, _ := tn.APIAuth(t, "GET", "/healthz", "", "")
	if code != 200 || out["status"] != "ok" {
		t.Fatalf("healthz: %d %v", code, out)
	}
	tn.Dial(t, tn.Token(t, "a", ""), testsupport.DialOpts{})
	tn.Dial(t, tn.Token(t, "b", ""), testsupport.DialOpts{})
	// The hub counts a session when it registers it; the cluster table, which
	// /cluster reads, a moment later.
	testsupport.WaitFor(t, "two sessions in /cluster", func() bool {
		code, out, _ = tn.API(t, "GET", "/cluster", "")
		ms, _ := out["members"].([]any)
		return code == 200 && len(ms) > 0 && ms[0].(map[string]any)["sessions"] == 2.0
	})
	if out["node"] != "t1" || out["table_size"] != 2.0 {
		t.Fatalf("cluster: %d %v", code, out)
	}
	ms := out["members"].([]any)
	m := ms[0].(map[string]any)
	if len(ms) != 1 || m["name"] != "t1" || m["state"] != "alive" || m["sessions"] != 2.0 || m["addr"] == "" {
		t.Fatalf("members: %v", ms)
	}
}

func TestShutdownAnswersInFlightSend(t *testing.T) {
	tn := nodetest.Start(t, nodetest.Config(t))
	c := tn.Dial(t, tn.Token(t, "f", ""), testsupport.DialOpts{})
	testsupport.WaitFor(t, "session registered", func() bool { return tn.Hub().Len() == 1 })

	body := `{"users":["f"],"data":"in flight"}`
	conn, err := net.Dial("tcp", tn.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", testsupport.APIKey, len(body), body[:10])
	// Requests whose headers the server has not read when shutdown starts
	// are not in flight (net/http drops them); wait until this one is.
	testsupport.WaitFor(t, "request in the handler", func() bool { return tn.InFlight() == 1 })

	stopped := make(chan struct{})
	go func() { tn.Stop(t); close(stopped) }()
	testsupport.WaitFor(t, "listener closed", func() bool {
		c, err := net.Dial("tcp", tn.Addr())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if _, err := conn.Write([]byte(body[10:])); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight /send got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("in-flight /send: %d", resp.StatusCode)
	}
	if f := c.Next(t); f["data"] != "in flight" {
		t.Fatalf("client got %v", f)
	}
	if code, _ := c.WaitClose(t); code != 1012 {
		t.Fatalf("close %d, want 1012 after the in-flight message", code)
	}
	<-stopped
}

func TestMetrics(t *testing.T) {
	tn := nodetest.Start(t, nodetest.Config(t))
	tn.Dial(t, tn.Token(t, "m", ""), testsupport.DialOpts{})
	testsupport.WaitFor(t, "session registered", func() bool { return tn.Hub().Len() == 1 })
	tn.Send(t, `{"users":["m","nobody"],"data":1}`)

	if code, _, _ := tn.APIAuth(t, "GET", "/metrics", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("/metrics without the API key: %d, want 401", code)
	}
	body := tn.Metrics(t)
	for _, want := range []string{
		"wsmesh_sessions 1",
		"wsmesh_connections_total 1",
		"wsmesh_sends_total 1",
		"wsmesh_deliveries_total 1",
		"wsmesh_offline_total 1",
		`wsmesh_members{state="alive"} 1`,
		"wsmesh_relay_batch_seconds_bucket",
		`wsmesh_build_info{revision="`, // revision and version of the running build
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestAdminProfiler(t *testing.T) {
	cfg := nodetest.Config(t)
	cfg.Admin.Listen = "127.0.0.1:0"
	tn := nodetest.Start(t, cfg)
	resp, err := http.Get("http://" + tn.AdminAddr() + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/debug/pprof/ on admin.listen: %d", resp.StatusCode)
	}
	if code, _, _ := tn.APIAuth(t, "GET", "/debug/pprof/", "", "Bearer "+testsupport.APIKey); code != http.StatusNotFound {
		t.Fatalf("profiler on the API listener: %d, want 404", code)
	}
}
