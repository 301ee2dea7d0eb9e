package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// freePort returns a port on 127.0.0.1 that is free for TCP and UDP right
// now (memberlist binds both). The kernel may hand it out again before the
// node binds it; with ports from the ephemeral range on a quiet test
// machine that is rare, and the node then fails to start, loudly.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP after 20 tries")
	return 0
}

// procNode is a wsmesh node running as its own process.
type procNode struct {
	name, cfgPath, logPath string
	http, gossip           string   // addresses
	prefix                 []string // runs the binary under this command (prlimit ...), if set
	api                    *testNode
	cmd                    *exec.Cmd
	exited                 chan error // receives cmd.Wait's result once per start
	running                bool
	logFrom                int64 // where this run's log lines start
}

func newProcNode(t *testing.T, dir, name, seed string) *procNode {
	t.Helper()
	p := &procNode{
		name:    name,
		cfgPath: filepath.Join(dir, name+".toml"),
		logPath: filepath.Join(dir, name+".log"),
		http:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		gossip:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	}
	seeds := ""
	if seed != "" {
		seeds = fmt.Sprintf("seeds = [%q]\n", seed)
	}
	cfg := fmt.Sprintf(`[node]
name = %q
shutdown_timeout = "5s"
[http]
listen = %q
[cluster]
bind = %q
%s[auth]
jwt_secret = %q
api_keys = [%q]
[log]
format = "json"
level = "info"
`, name, p.http, p.gossip, seeds, testSecret, testAPIKey)
	if err := os.WriteFile(p.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.api = &testNode{node: &node{ln: fixedAddr(p.http)}, cfg: testConfig(t)}
	return p
}

// start runs the node and waits until it logs (JSON) that it serves on its
// HTTP address and answers /healthz. The process is killed and reaped when
// the test ends, if it still runs.
func (p *procNode) start(t *testing.T, bin string) {
	t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own copy
	st, err := logf.Stat()
	if err != nil {
		t.Fatal(err)
	}
	p.logFrom = st.Size()
	argv := append(append([]string{}, p.prefix...), bin, "serve", "-config", p.cfgPath)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = os.Environ()
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	p.exited, p.running = exited, true
	cmd := p.cmd
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd == cmd && p.running {
			_ = cmd.Process.Kill()
			<-exited
			p.running = false
		}
	})
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for p.servingLines(t) == 0 || !p.healthy() {
		select {
		case err := <-exited:
			p.running = false
			t.Fatalf("%s exited before serving: %v\n%s", p.name, err, p.logTail(20))
		case <-deadline.C:
			t.Fatalf("%s did not serve within %s\n%s", p.name, waitLimit, p.logTail(20))
		case <-tick.C:
		}
	}
}

// readLog returns the lines p's current run has logged so far: decoded,
// and the ones that are not JSON (a line still being written, or a bug).
func (p *procNode) readLog(t *testing.T) (lines []map[string]any, notJSON []string) {
	t.Helper()
	f, err := os.Open(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(p.logFrom, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			notJSON = append(notJSON, sc.Text())
			continue
		}
		lines = append(lines, m)
	}
	return lines, notJSON
}

// servingLines counts the JSON log lines of the current run saying the
// node serves on its HTTP address; every line must be JSON.
func (p *procNode) servingLines(t *testing.T) int {
	t.Helper()
	lines, notJSON := p.readLog(t)
	if len(notJSON) > 0 {
		t.Fatalf("%s: log line is not JSON: %q", p.name, notJSON[0])
	}
	n := 0
	for _, m := range lines {
		if m["msg"] == "node serving" && m["node"] == p.name && m["http"] == p.http {
			n++
		}
	}
	return n
}

func (p *procNode) healthy() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.http + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// kill sends SIGKILL and reaps the process.
func (p *procNode) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		p.running = false
	case <-time.After(waitLimit):
		t.Fatalf("%s not reaped after SIGKILL", p.name)
	}
}

func (p *procNode) logTail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return p.name + " log:\n" + strings.Join(lines, "\n")
}

// members returns name -> {state, sessions} from the node's GET /cluster.
func (p *procNode) members(t *testing.T) map[string]map[string]any {
	t.Helper()
	code, out, _ := p.api.api(t, http.MethodGet, "/cluster", "")
	if code != http.StatusOK {
		t.Fatalf("%s GET /cluster: %d %v", p.name, code, out)
	}
	ms := map[string]map[string]any{}
	list, _ := out["members"].([]any)
	for _, m := range list {
		if mm, ok := m.(map[string]any); ok {
			ms[fmt.Sprint(mm["name"])] = mm
		}
	}
	return ms
}

func (p *procNode) allAlive(t *testing.T, names ...string) bool {
	ms := p.members(t)
	for _, n := range names {
		if ms[n]["state"] != "alive" {
			return false
		}
	}
	return len(ms) == len(names)
}

// TestProcessKillAndRestart runs three nodes as processes, SIGKILLs one
// that holds a client, expects its user offline at once on another node,
// restarts it with the same name and addresses, and expects a new client
// there to be reachable again from the first node. Two rounds: a restart
// at once (the others still list the old run alive or suspect: the new run
// is told apart by its boot epoch), then a restart once the others have
// declared it dead (it must re-join under the same name and address).
// startProcCluster starts p1..p3 as processes of bin (p2 and p3 seeded
// with p1), waits until each sees all three alive, and logs their log
// tails if the test fails.
func startProcCluster(t *testing.T, bin string) (p1, p2, p3 *procNode) {
	t.Helper()
	dir := t.TempDir()
	p1 = newProcNode(t, dir, "p1", "")
	p2 = newProcNode(t, dir, "p2", p1.gossip)
	p3 = newProcNode(t, dir, "p3", p1.gossip)
	procs := []*procNode{p1, p2, p3}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range procs {
				t.Log(p.logTail(40))
			}
		}
	})
	start := time.Now()
	for _, p := range procs {
		p.start(t, bin)
	}
	for _, p := range procs {
		pollUntil(t, p.name+" to see 3 alive members", 2*waitLimit, func() bool { return p.allAlive(t, "p1", "p2", "p3") })
	}
	t.Logf("3 node processes up and converged in %s", time.Since(start))
	return p1, p2, p3
}

func TestProcessKillAndRestart(t *testing.T) {
	bin := buildBinary(t)
	p1, p2, p3 := startProcCluster(t, bin)
	procs := []*procNode{p1, p2, p3}

	c := p3.api.dial(t, p3.api.token(t, "k", ""), dialOpts{})
	pollUntil(t, "p1 to know p3's session", waitLimit, func() bool { return p1.members(t)["p3"]["sessions"] == 1.0 })
	out := p1.api.send(t, `{"users":["k"],"data":"before kill"}`)
	if out["delivered"] != 1.0 {
		t.Fatalf("send on p1 to k on p3: %v", out)
	}
	if f := c.next(t); f["id"] != out["id"] {
		t.Fatalf("k got %v, want %v", f, out["id"])
	}

	for _, waitDead := range []bool{false, true} {
		round := "quick restart"
		if waitDead {
			round = "restart after declared dead"
		}
		p3.kill(t)
		killedAt := time.Now()
		select {
		case <-c.closed:
		case <-time.After(waitLimit):
			t.Fatalf("%s: client on p3 still connected after SIGKILL", round)
		}
		out, took := timedSend(t, p1.api, `{"users":["k"],"data":"after kill"}`)
		t.Logf("%s: send on p1 to k on killed p3 answered in %s: %v (p1 sees p3 %v)", round, took, out["results"], p1.members(t)["p3"]["state"])
		if out["offline"] != 1.0 || out["delivered"] != 0.0 {
			t.Fatalf("%s: send to k on killed p3: %v, want offline", round, out)
		}
		if took >= time.Second {
			t.Fatalf("%s: send to k on killed p3 took %s, want < 1s", round, took)
		}
		if waitDead {
			var suspect time.Duration
			dead := pollUntil(t, "p1 to declare p3 dead", 3*waitLimit, func() bool {
				st := p1.members(t)["p3"]["state"]
				if st == "suspect" && suspect == 0 {
					suspect = time.Since(killedAt)
				}
				return st == "dead"
			})
			t.Logf("%s: p1 saw p3 suspect after %s, dead after %s (memberlist LAN timings)", round, suspect, dead)
			if m := p1.members(t)["p3"]; m["sessions"] != 0.0 {
				t.Fatalf("%s: p1 lists dead p3 with sessions: %v", round, m)
			}
		}

		restartAt := time.Now()
		p3.start(t, bin)
		t.Logf("%s: p3 serving again (same name, same addresses) %s after SIGKILL", round, time.Since(killedAt))
		c = p3.api.dial(t, p3.api.token(t, "k", ""), dialOpts{})

		// Poll /send on p1 until the new session is reachable; the client
		// must then receive the message that was reported delivered.
		var tries int
		var deliveredID any
		deadline := time.NewTimer(2 * waitLimit)
		tick := time.NewTicker(20 * time.Millisecond)
		for deliveredID == nil {
			out := p1.api.send(t, fmt.Sprintf(`{"users":["k"],"data":%d}`, tries))
			tries++
			if out["delivered"] == 1.0 {
				deliveredID = out["id"]
				break
			}
			select {
			case <-tick.C:
			case <-deadline.C:
				t.Fatalf("%s: p1's /send to k on restarted p3 not delivered within %s (%d tries); last: %v", round, 2*waitLimit, tries, out)
			}
		}
		deadline.Stop()
		tick.Stop()
		t.Logf("%s: p1 reached the new k on p3 %s after the restart, on try %d", round, time.Since(restartAt), tries)
		for i := 0; ; i++ {
			f := c.next(t)
			if f["id"] == deliveredID {
				break
			}
			// A send reported offline may still have arrived if its answer
			// was lost: note it and read on.
			t.Logf("%s: k received %v before the message reported delivered", round, f["id"])
			if i >= tries {
				t.Fatalf("%s: k never received the message reported delivered (%v)", round, deliveredID)
			}
		}

		pollUntil(t, "p1's /cluster to show p3 alive with 1 session", waitLimit, func() bool {
			m := p1.members(t)["p3"]
			return m["state"] == "alive" && m["sessions"] == 1.0
		})
		for _, p := range procs {
			pollUntil(t, p.name+" to see 3 alive members after the restart", waitLimit, func() bool { return p.allAlive(t, "p1", "p2", "p3") })
		}
		pollUntil(t, "p2's /cluster to show p3 with 1 session", waitLimit, func() bool { return p2.members(t)["p3"]["sessions"] == 1.0 })
		t.Logf("%s: cluster whole again %s after the restart", round, time.Since(restartAt))
	}
}
