package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"wsmesh/config"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// The nginx tests run the production server block, deploy/nginx.conf, in a
// real nginx in front of real nodes. nginxServerBlock turns that file into a
// runnable one by rewriting exactly these lines, and nothing else:
//
//   - the "server ADDR;" lines inside "upstream wsmesh { }" become one
//     "server ADDR;" line per test node (the first is replaced, the others
//     dropped);
//   - the single uncommented "listen ...;" line becomes "listen 127.0.0.1:PORT;";
//   - the single uncommented "access_log PATH FORMAT;" line gets PATH
//     DIR/wsmesh.access.log (the format is kept);
//   - the single "proxy_read_timeout ...;" and "proxy_send_timeout ...;"
//     lines (location = /ws) get nginxOpts' values, when those are set.
//
// Each rewrite must find what it expects (at least one upstream server line,
// exactly one of each other line); otherwise the test fails, so a change to
// the file's shape is noticed rather than silently tested around. startNginx
// wraps the result in a minimal nginx.conf (daemon off, one process, every
// file in one temp directory) that includes it.

const nginxDeployConf = "deploy/nginx.conf"

// nginxOpts adjusts startNginx. The zero value runs deploy/nginx.conf with
// its own timeouts.
type nginxOpts struct {
	readTimeout time.Duration // proxy_read_timeout of location = /ws; 0: the file's (75s)
	sendTimeout time.Duration // proxy_send_timeout of location = /ws; 0: the file's (75s)
	// dir holds nginx.conf, wsmesh.conf (the rewritten server block),
	// error.log, wsmesh.access.log (the server's access log), the pid file
	// and temp directories; "": a new t.TempDir(). Set it to read the logs
	// during the test.
	dir string
}

var (
	reUpstreamOpen = regexp.MustCompile(`^\s*upstream\s+wsmesh\s*\{`)
	reBlockClose   = regexp.MustCompile(`^\s*\}`)
	reServerLine   = regexp.MustCompile(`^(\s*)server\s+[^\s;]+[^;]*;\s*$`)
	reListenLine   = regexp.MustCompile(`^(\s*)listen\s+[^;]+;\s*$`)
	reAccessLog    = regexp.MustCompile(`^(\s*)access_log\s+\S+(\s+[^;]+)?;\s*$`)
	reReadTimeout  = regexp.MustCompile(`^(\s*)proxy_read_timeout\s+[^;]+;\s*$`)
	reSendTimeout  = regexp.MustCompile(`^(\s*)proxy_send_timeout\s+[^;]+;\s*$`)
)

// nginxServerBlock returns deploy/nginx.conf rewritten as described above.
// nil upstreams and an empty listen keep the file's own lines.
func nginxServerBlock(tb testing.TB, upstreams []string, listen, dir string, o nginxOpts) string {
	tb.Helper()
	raw, err := os.ReadFile(nginxDeployConf)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	inUpstream := false
	var servers, listens, logs, reads, sends int
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case reUpstreamOpen.MatchString(line):
			inUpstream = true
		case inUpstream && reBlockClose.MatchString(line):
			inUpstream = false
		case inUpstream && reServerLine.MatchString(line):
			servers++
			if upstreams != nil {
				if servers == 1 {
					indent := reServerLine.FindStringSubmatch(line)[1]
					for _, u := range upstreams {
						out = append(out, indent+"server "+u+";")
					}
				}
				continue
			}
		case reListenLine.MatchString(line):
			listens++
			if listen != "" {
				line = reListenLine.FindStringSubmatch(line)[1] + "listen " + listen + ";"
			}
		case reAccessLog.MatchString(line):
			logs++
			m := reAccessLog.FindStringSubmatch(line)
			line = m[1] + "access_log " + nginxQuote(tb, filepath.Join(dir, "wsmesh.access.log")) + m[2] + ";"
		case reReadTimeout.MatchString(line):
			reads++
			if o.readTimeout > 0 {
				line = reReadTimeout.FindStringSubmatch(line)[1] + "proxy_read_timeout " + nginxDuration(o.readTimeout) + ";"
			}
		case reSendTimeout.MatchString(line):
			sends++
			if o.sendTimeout > 0 {
				line = reSendTimeout.FindStringSubmatch(line)[1] + "proxy_send_timeout " + nginxDuration(o.sendTimeout) + ";"
			}
		}
		out = append(out, line)
	}
	if servers == 0 || listens != 1 || logs != 1 || reads != 1 || sends != 1 {
		tb.Fatalf("%s no longer has the shape nginx_test.go rewrites: found %d server lines in upstream wsmesh (want >= 1), "+
			"%d uncommented listen lines, %d access_log, %d proxy_read_timeout, %d proxy_send_timeout (want 1 each)",
			nginxDeployConf, servers, listens, logs, reads, sends)
	}
	return strings.Join(out, "\n")
}

// nginxDuration writes d in nginx's time syntax.
func nginxDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// nginxQuote quotes a path for nginx.conf.
func nginxQuote(tb testing.TB, s string) string {
	tb.Helper()
	if strings.ContainsAny(s, "\"\\$;{}") {
		tb.Fatalf("path %q cannot be written into nginx.conf", s)
	}
	return `"` + s + `"`
}

// nginxMainConf is the whole nginx.conf around the server block: one
// process in the foreground, every path under dir, so nginx runs without
// privileges and leaves nothing outside dir.
func nginxMainConf(tb testing.TB, dir string) string {
	tb.Helper()
	p := func(name string) string { return nginxQuote(tb, filepath.Join(dir, name)) }
	return `# Written by nginx_test.go; the server block is deploy/nginx.conf, rewritten.
daemon off;
master_process off;
worker_processes 1;
pid ` + p("nginx.pid") + `;
error_log ` + p("error.log") + ` info;

events {
    worker_connections 256;
}

http {
    access_log ` + p("access.log") + `; # servers without their own access_log
    client_body_temp_path ` + p("client_body") + `;
    proxy_temp_path ` + p("proxy") + `;
    fastcgi_temp_path ` + p("fastcgi") + `;
    uwsgi_temp_path ` + p("uwsgi") + `;
    scgi_temp_path ` + p("scgi") + `;
    include ` + p("wsmesh.conf") + `;
}
`
}

// startNginx runs nginx with deploy/nginx.conf in front of upstreams
// (host:port of nodes' http.listen) and returns the address it listens on,
// 127.0.0.1:PORT: clients use ws://ADDR/ws?token=... and http://ADDR/send.
// It skips the test where nginx is not installed (fails on CI), waits until
// the port accepts, and stops nginx (SIGTERM, then SIGKILL) and reaps it
// when the test ends; on failure it logs nginx's error and access logs.
func startNginx(tb testing.TB, upstreams []string, o nginxOpts) string {
	tb.Helper()
	bin := testsupport.RequireTool(tb, "nginx", "nginx")
	if len(upstreams) == 0 {
		tb.Fatal("startNginx: no upstreams")
	}
	if o.dir == "" {
		o.dir = tb.TempDir()
	}
	// The port is picked, freed, then bound by nginx: if something takes it
	// in between, nginx fails with "Address already in use"; try again.
	for attempt := 1; ; attempt++ {
		addr, err := tryStartNginx(tb, bin, upstreams, o)
		if err == nil {
			return addr
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 5 {
			tb.Fatalf("nginx: %v\n%s", err, tailFile(filepath.Join(o.dir, "error.log"), 30))
		}
		tb.Logf("nginx: %v; trying another port", err)
	}
}

func tryStartNginx(tb testing.TB, bin string, upstreams []string, o nginxOpts) (string, error) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	dir := o.dir
	conf := filepath.Join(dir, "nginx.conf")
	errLog := filepath.Join(dir, "error.log")
	_ = os.Remove(errLog) // a previous attempt's
	if err := os.WriteFile(filepath.Join(dir, "wsmesh.conf"), []byte(nginxServerBlock(tb, upstreams, addr, dir, o)), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(nginxMainConf(tb, dir)), 0o644); err != nil {
		tb.Fatal(err)
	}
	out, err := os.OpenFile(filepath.Join(dir, "nginx.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close() // nginx has its own copy
	// -e: the error log before nginx.conf is read (else the packaged
	// /var/log/nginx/error.log); -p: relative paths resolve under dir.
	cmd := exec.Command(bin, "-c", conf, "-p", dir+string(filepath.Separator), "-e", errLog)
	cmd.Stdout, cmd.Stderr = out, out
	// Should the test binary die, nginx goes with it. (Pdeathsig follows
	// the thread that started nginx; Go ends a thread only when a goroutine
	// locked to it exits, which nothing here does.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start nginx: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.NewTimer(testsupport.WaitLimit)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(errLog)
			if strings.Contains(string(log), "Address already in use") {
				return "", fmt.Errorf("listen on %s: %w", addr, syscall.EADDRINUSE)
			}
			return "", fmt.Errorf("exited before listening on %s: %v", addr, err)
		case <-deadline.C:
			_ = cmd.Process.Kill()
			<-exited
			return "", fmt.Errorf("not listening on %s within %s", addr, testsupport.WaitLimit)
		case <-tick.C:
		}
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // fast shutdown: open WebSockets are cut
		select {
		case err := <-exited:
			if err != nil {
				tb.Errorf("nginx exited with %v after SIGTERM", err)
			}
		case <-time.After(testsupport.WaitLimit):
			_ = cmd.Process.Kill()
			<-exited
			tb.Errorf("nginx did not stop within %s of SIGTERM; killed", testsupport.WaitLimit)
		}
		log, _ := os.ReadFile(errLog)
		for _, l := range strings.Split(string(log), "\n") {
			if strings.Contains(l, "[emerg]") || strings.Contains(l, "[alert]") || strings.Contains(l, "[crit]") {
				tb.Errorf("nginx error log: %s", l)
			}
		}
		if tb.Failed() {
			tb.Logf("nginx error log:\n%s", tailFile(errLog, 40))
			tb.Logf("nginx stdout and stderr:\n%s", tailFile(filepath.Join(dir, "nginx.out"), 20))
			tb.Logf("nginx access log:\n%s", tailFile(filepath.Join(dir, "wsmesh.access.log"), 40))
		}
	})
	return addr, nil
}

// checkDelivered checks a /send answer: one session of user, delivered by
// owner.
func checkDelivered(t *testing.T, what string, out map[string]any, owner string) {
	t.Helper()
	res, _ := out["results"].([]any)
	if out["delivered"] != 1.0 || out["offline"] != 0.0 || out["failed"] != 0.0 || len(res) != 1 {
		t.Fatalf("%s: %v, want 1 delivered", what, out)
	}
	if r, _ := res[0].(map[string]any); r["status"] != "delivered" || r["node"] != owner {
		t.Fatalf("%s: result %v, want delivered by %s", what, r, owner)
	}
}

// TestNginxFrontsThreeNodes runs three nodes as processes (JSON logs we can
// read) trusting 127.0.0.1, nginx with deploy/nginx.conf in front of them,
// and a client that connects through nginx from 127.0.0.2 with forged
// forwarding headers. The owner must log the client as 127.0.0.2, and a
// /send on each node directly, and one through nginx, must reach it.
func TestNginxFrontsThreeNodes(t *testing.T) {
	testsupport.RequireTool(t, "nginx", "nginx")
	bin := buildBinary(t)
	// The nodes inherit this (procNode.start passes os.Environ()): nginx
	// reaches them from 127.0.0.1, so they believe its X-Forwarded-For.
	t.Setenv("WSMESH_HTTP_TRUSTED_PROXIES", "127.0.0.1")
	p1, p2, p3 := startProcCluster(t, bin)
	procs := []*procNode{p1, p2, p3}

	ngDir := t.TempDir()
	ng := startNginx(t, []string{p1.http, p2.http, p3.http}, nginxOpts{dir: ngDir})
	via := testsupport.NewClient(ng, testsupport.Secret, testsupport.APIKey) // the API through nginx
	if code, out, _ := via.API(t, http.MethodGet, "/healthz", ""); code != http.StatusOK || out["status"] != "ok" {
		t.Fatalf("GET /healthz through nginx: %d %v", code, out)
	}
	if code, reasons := readyz(t, via); code != http.StatusOK {
		t.Fatalf("GET /readyz through nginx: %d %v", code, reasons)
	}

	// A client forging both forwarding headers: nginx replaces X-Real-IP
	// and appends 127.0.0.2 to X-Forwarded-For; the node reads that list
	// from the right.
	forged := http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Real-Ip": {"198.51.100.9"}}
	token := p1.api.Token(t, "nx", "web")
	c := testsupport.DialWS(t, ng, token, testsupport.DialOpts{Source: "127.0.0.2", Header: forged})

	var owner *procNode
	var opened []map[string]any
	testsupport.PollUntil(t, "a node to log session opened for nx", testsupport.WaitLimit, func() bool {
		for _, p := range procs {
			if l := p.logEntries(t, "session opened", "nx"); len(l) > 0 {
				owner, opened = p, l
				return true
			}
		}
		return false
	})
	if len(opened) != 1 || opened[0]["remote"] != "127.0.0.2" || opened[0]["device"] != "web" {
		t.Fatalf("%s logged %v, want one session opened with remote 127.0.0.2", owner.name, opened)
	}
	for _, p := range procs {
		if l := p.logEntries(t, "session opened", "nx"); p != owner && len(l) > 0 {
			t.Fatalf("%s also logged a session for nx: %v", p.name, l)
		}
	}
	t.Logf("nginx sent the client to %s, which logged remote=%v", owner.name, opened[0]["remote"])
	for _, p := range procs {
		testsupport.PollUntil(t, p.name+" to route nx to "+owner.name, testsupport.WaitLimit, func() bool {
			return p.members(t)[owner.name]["sessions"] == 1.0
		})
	}

	for _, p := range procs {
		out := p.api.Send(t, fmt.Sprintf(`{"users":["nx"],"data":{"via":%q}}`, p.name))
		checkDelivered(t, "send on "+p.name, out, owner.name)
		if f := c.Next(t); f["type"] != "message" || f["id"] != out["id"] || fmt.Sprint(f["data"]) != "map[via:"+p.name+"]" {
			t.Fatalf("client got %v after the send on %s (id %v)", f, p.name, out["id"])
		}
	}
	out := via.Send(t, `{"users":["nx"],"data":{"via":"nginx"}}`)
	checkDelivered(t, "send through nginx", out, owner.name)
	if f := c.Next(t); f["id"] != out["id"] || fmt.Sprint(f["data"]) != "map[via:nginx]" {
		t.Fatalf("client got %v after the send through nginx (id %v)", f, out["id"])
	}
	select {
	case <-c.Closed():
		t.Fatalf("client closed (code %d, %q)", c.Code, c.Reason)
	default:
	}

	// nginx logs an upgraded request when it ends: close the client, then
	// the access log must show it from 127.0.0.2, without its token.
	c.Close()
	accessLog := filepath.Join(ngDir, "wsmesh.access.log")
	var wsLine string
	testsupport.WaitFor(t, "nginx to log the WebSocket request", func() bool {
		b, _ := os.ReadFile(accessLog)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `"GET /ws HTTP/1.1" 101`) {
				wsLine = l
				return true
			}
		}
		return false
	})
	if !strings.HasPrefix(wsLine, "127.0.0.2 ") {
		t.Fatalf("nginx logged the WebSocket request as %q, want it from 127.0.0.2", wsLine)
	}
	if b, _ := os.ReadFile(accessLog); strings.Contains(string(b), token) || strings.Contains(string(b), "token=") {
		t.Fatalf("nginx's access log holds the client token:\n%s", b)
	}
}

// TestNginxKeepsIdleClientConnected checks deploy/nginx.conf's timeout
// against the node's heartbeat: a client that sends nothing of its own
// through nginx (proxy_read_timeout 5s) stays connected for 15 s while the
// node pings every 2 s (idle_timeout 6s): the pings keep nginx's read timer
// from firing and the client's automatic pongs keep the node's idle timer
// from firing. As a control, with pings only every 10 s nginx cuts the same
// client after about 5 s. The two run in parallel.
func TestNginxKeepsIdleClientConnected(t *testing.T) {
	testsupport.RequireTool(t, "nginx", "nginx")
	const (
		readTimeout = 5 * time.Second
		idleFor     = 15 * time.Second
	)
	t.Run("ping 2s under proxy_read_timeout 5s", func(t *testing.T) {
		t.Parallel()
		nodes := nodetest.StartCluster(t, 3, func(_ int, s *nodetest.Setup) {
			s.Cfg.Session.PingInterval = config.Duration(2 * time.Second)
			s.Cfg.Session.IdleTimeout = config.Duration(6 * time.Second)
			s.Cfg.Log.Level = "info"
		})
		ng := startNginx(t, []string{nodes[0].Addr(), nodes[1].Addr(), nodes[2].Addr()},
			nginxOpts{readTimeout: readTimeout, sendTimeout: readTimeout})
		c := testsupport.DialWS(t, ng, nodes[0].Token(t, "idle", ""), testsupport.DialOpts{})
		var owner string
		testsupport.WaitFor(t, "idle's session in t1's table", func() bool {
			if o := nodes[0].Cluster().Owners("idle"); len(o) > 0 {
				owner = o[0]
				return true
			}
			return false
		})
		nodetest.WaitRoutable(t, nodes, "idle", owner)
		checkDelivered(t, "send before the wait", nodes[0].Send(t, `{"users":["idle"],"data":"before"}`), owner)
		if f := c.Next(t); f["data"] != "before" {
			t.Fatalf("client got %v", f)
		}

		idle := time.NewTimer(idleFor)
		defer idle.Stop()
		start := time.Now()
		select {
		case <-c.Closed():
			t.Fatalf("client idle behind nginx closed after %s (code %d, %q); pings seen: %d",
				time.Since(start).Round(time.Millisecond), c.Code, c.Reason, c.DrainPings())
		case <-idle.C:
		}
		pings := c.DrainPings()
		t.Logf("idle %s behind nginx (proxy_read_timeout %s, ping_interval 2s, idle_timeout 6s) on %s: %d pings seen and answered",
			idleFor, readTimeout, owner, pings)
		if min := int(idleFor/(2*time.Second)) - 2; pings < min {
			t.Fatalf("client saw %d pings in %s, want at least %d", pings, idleFor, min)
		}
		out := nodes[1].Send(t, `{"users":["idle"],"data":"after"}`)
		checkDelivered(t, "send after the wait", out, owner)
		if f := c.Next(t); f["id"] != out["id"] || f["data"] != "after" {
			t.Fatalf("client got %v, want the message %v", f, out["id"])
		}
		select {
		case <-c.Closed():
			t.Fatalf("client closed (code %d, %q)", c.Code, c.Reason)
		default:
		}
	})

	t.Run("control: ping 10s over proxy_read_timeout 5s", func(t *testing.T) {
		t.Parallel()
		cfg := nodetest.Config(t)
		cfg.Session.PingInterval = config.Duration(10 * time.Second)
		cfg.Session.IdleTimeout = config.Duration(30 * time.Second)
		cfg.Log.Level = "info"
		n := nodetest.Start(t, cfg)
		dir := t.TempDir()
		ng := startNginx(t, []string{n.Addr()}, nginxOpts{readTimeout: readTimeout, sendTimeout: readTimeout, dir: dir})
		c := testsupport.DialWS(t, ng, n.Token(t, "idle", ""), testsupport.DialOpts{})
		start := time.Now()
		limit := time.NewTimer(readTimeout + 2*time.Second)
		defer limit.Stop()
		select {
		case <-c.Closed():
		case <-limit.C:
			t.Fatalf("nginx kept a connection with no traffic open for %s (proxy_read_timeout %s): the idle test proves nothing", time.Since(start).Round(time.Millisecond), readTimeout)
		}
		took := time.Since(start)
		t.Logf("with ping_interval 10s nginx cut the idle client after %s (code %d, pings seen %d)", took.Round(time.Millisecond), c.Code, c.DrainPings())
		if took < readTimeout-time.Second {
			t.Fatalf("connection dropped after %s, before proxy_read_timeout %s: something else closed it", took, readTimeout)
		}
		testsupport.WaitFor(t, "nginx to log the upstream timeout", func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return strings.Contains(string(b), "upstream timed out") && strings.Contains(string(b), "upgraded connection")
		})
		testsupport.WaitFor(t, "the node to drop the session", func() bool { return n.Hub().Len() == 0 })
	})
}

// TestNginxConfigValid checks deploy/nginx.conf as shipped (its own
// upstreams, listen 80 and timeouts; only the access log moved to a temp
// directory) with nginx -t: it parses and every directive is known to
// nginx. nginx -t neither binds nor connects.
func TestNginxConfigValid(t *testing.T) {
	bin := testsupport.RequireTool(t, "nginx", "nginx")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wsmesh.conf"), []byte(nginxServerBlock(t, nil, "", dir, nginxOpts{})), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxMainConf(t, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-c", conf, "-p", dir+"/", "-e", filepath.Join(dir, "error.log")).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t on %s: %v\n%s", nginxDeployConf, err, out)
	}
	t.Logf("nginx -t: %s", strings.TrimSpace(string(out)))
}
