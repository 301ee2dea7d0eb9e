package main

// The harness of the tests that run the wsmesh binary: it is built once per
// test run (buildBinary), and procNode runs it as a node with a config
// file, its JSON log in a file.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildBinary builds wsmesh once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wsmesh-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "wsmesh")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// procNode is a wsmesh node running as its own process.
type procNode struct {
	name, cfgPath, logPath string
	http, gossip           string   // addresses
	prefix                 []string // runs the binary under this command (prlimit ...), if set
	api                    *testsupport.Client
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
		http:    fmt.Sprintf("127.0.0.1:%d", testsupport.FreePort(t)),
		gossip:  fmt.Sprintf("127.0.0.1:%d", testsupport.FreePort(t)),
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
`, name, p.http, p.gossip, seeds, testsupport.Secret, testsupport.APIKey)
	if err := os.WriteFile(p.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.api = testsupport.NewClient(p.http, testsupport.Secret, testsupport.APIKey)
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
	deadline := time.NewTimer(testsupport.WaitLimit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for p.servingLines(t) == 0 || !p.healthy() {
		select {
		case err := <-exited:
			p.running = false
			t.Fatalf("%s exited before serving: %v\n%s", p.name, err, p.logTail(20))
		case <-deadline.C:
			t.Fatalf("%s did not serve within %s\n%s", p.name, testsupport.WaitLimit, p.logTail(20))
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
	case <-time.After(testsupport.WaitLimit):
		t.Fatalf("%s not reaped after SIGKILL", p.name)
	}
}

// logTail returns the last n lines of p's log, all runs.
func (p *procNode) logTail(n int) string { return p.name + " log:\n" + tailFile(p.logPath, n) }

// members returns name -> {state, sessions} from the node's GET /cluster.
func (p *procNode) members(t *testing.T) map[string]map[string]any {
	t.Helper()
	code, out, _ := p.api.API(t, http.MethodGet, "/cluster", "")
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

// logEntries returns the JSON log lines of p's current run with this msg
// and user.
func (p *procNode) logEntries(t *testing.T, msg, user string) []map[string]any {
	t.Helper()
	lines, _ := p.readLog(t) // a line not JSON yet is still being written
	var out []map[string]any
	for _, m := range lines {
		if m["msg"] == msg && m["user"] == user {
			out = append(out, m)
		}
	}
	return out
}

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
		testsupport.PollUntil(t, p.name+" to see 3 alive members", 2*testsupport.WaitLimit, func() bool { return p.allAlive(t, "p1", "p2", "p3") })
	}
	t.Logf("3 node processes up and converged in %s", time.Since(start))
	return p1, p2, p3
}

// tailFile returns the last n lines of a file, or why it cannot.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// timedSend posts /send and returns the answer and how long it took.
func timedSend(tb testing.TB, c *testsupport.Client, body string) (map[string]any, time.Duration) {
	tb.Helper()
	start := time.Now()
	out := c.Send(tb, body)
	return out, time.Since(start)
}
