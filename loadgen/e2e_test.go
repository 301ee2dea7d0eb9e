package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

// wsmeshBinary builds the wsmesh command once per test run (without -race:
// the nodes and workers it runs would be several times slower).
func wsmeshBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "loadgen-bin-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "wsmesh")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Dir = ".." // the module root: package main
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer for writers in several goroutines; fire, if
// set, is called once when the text first contains trigger.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	trigger string
	fire    func()
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	if s.fire != nil && strings.Contains(s.b.String(), s.trigger) {
		s.fire()
		s.fire = nil
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var tempDirLine = regexp.MustCompile(`configs and logs in (\S+) \(removed at the end\)`)

// checkAllEnded fails if a process of pids still exists (running or a
// zombie nobody reaped), or the spawned nodes' temp dir named in log does.
func checkAllEnded(t *testing.T, pids []int, log string) {
	t.Helper()
	if len(pids) == 0 {
		t.Error("no pids to check")
	}
	for _, pid := range pids {
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			t.Errorf("process %d still exists after bench returned: %s", pid, stat)
		}
	}
	m := tempDirLine.FindStringSubmatch(log)
	if m == nil {
		t.Errorf("no temp dir named in the log:\n%s", log)
	} else if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spawned nodes' dir %s still there (%v)", m[1], err)
	}
}

// checkSendSummary asserts what every completed send run must show, on the
// summary as JSON (decoded into maps: the field names are the interface).
func checkSendSummary(t *testing.T, raw []byte, sends, delivered float64) (pids []int) {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("summary: %v\n%s", err, raw)
	}
	obj := func(k string) map[string]any {
		m, ok := s[k].(map[string]any)
		if !ok {
			t.Fatalf("summary has no object %q:\n%s", k, raw)
		}
		return m
	}
	sd, res, msgs, lat, conns := obj("sends"), obj("results"), obj("messages"), obj("latency"), obj("connections")
	if sd["ok"] != sends || sd["started"] != sends || sd["http_errors"] != 0.0 || sd["transport_errors"] != 0.0 {
		t.Errorf("sends: %v, want %v ok", sd, sends)
	}
	if res["delivered"] != delivered || res["offline"] != 0.0 || res["error"] != 0.0 {
		t.Errorf("results: %v, want %v delivered", res, delivered)
	}
	if msgs["expected"] != delivered || msgs["received"] != delivered || msgs["missing"] != 0.0 || msgs["extra"] != 0.0 || msgs["unparsed"] != 0.0 {
		t.Errorf("messages: %v, want %v received, none missing", msgs, delivered)
	}
	if r, _ := msgs["rate"].(float64); r <= 0 {
		t.Errorf("messages rate %v", msgs["rate"])
	}
	if lat["count"] != delivered {
		t.Errorf("latency count %v, want %v", lat["count"], delivered)
	}
	for _, k := range []string{"min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"} {
		if v, _ := lat[k].(float64); v <= 0 {
			t.Errorf("latency %s = %v, want > 0", k, lat[k])
		}
	}
	if lat["p50_ms"].(float64) > lat["p99_ms"].(float64) || lat["p99_ms"].(float64) > lat["max_ms"].(float64) {
		t.Errorf("latency percentiles out of order: %v", lat)
	}
	if conns["opened"] != conns["attempted"] || conns["failed"] != 0.0 || conns["dropped"] != 0.0 {
		t.Errorf("connections: %v", conns)
	}
	if w, ok := s["warnings"]; ok {
		t.Errorf("warnings: %v", w)
	}
	nodes, _ := s["nodes"].([]any)
	for _, n := range nodes {
		n := n.(map[string]any)
		for _, k := range []string{"rss_before_bytes", "rss_connected_bytes", "rss_after_bytes", "pid"} {
			if v, _ := n[k].(float64); v <= 0 {
				t.Errorf("node %v: %s = %v", n["name"], k, n[k])
			}
		}
		pids = append(pids, int(n["pid"].(float64)))
	}
	workers, _ := s["workers"].([]any)
	for _, w := range workers {
		if pid, _ := w.(map[string]any)["pid"].(float64); pid > 0 {
			pids = append(pids, int(pid))
		}
	}
	return pids
}

// TestBenchBinary runs the built wsmesh as `bench -spawn 2 -clients 200
// -recipients 10 -messages 2000 -json`: two nodes and a worker process,
// all its children. Every message reported delivered must arrive, stdout
// must be exactly one JSON object, and no child may outlive it.
func TestBenchBinary(t *testing.T) {
	bin := wsmeshBinary(t)
	cmd := exec.Command(bin, "bench", "-spawn", "2", "-clients", "200", "-recipients", "10", "-messages", "2000", "-json")
	cmd.Dir = t.TempDir() // no config.toml there: -spawn needs none
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("bench: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("bench still running after 2 minutes: killed\nstderr:\n%s", stderr.String())
	}
	t.Logf("bench ran in %s; stderr:\n%s", time.Since(start).Round(time.Millisecond), stderr.String())

	dec := json.NewDecoder(strings.NewReader(stdout.String()))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("stdout is not a JSON object: %v\n%s", err, stdout.String())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Fatalf("stdout has more than one JSON value:\n%s", stdout.String())
	}
	pids := checkSendSummary(t, raw, 2000, 20000)
	if len(pids) != 3 {
		t.Errorf("want 3 child pids (2 nodes, 1 worker), got %v", pids)
	}
	checkAllEnded(t, pids, stderr.String())
}

// TestBenchInProcess runs bench in this process (so under -race the
// orchestration and, with -workers 0, the clients are checked), with two
// devices per user and a -rate.
func TestBenchInProcess(t *testing.T) {
	bin := wsmeshBinary(t)
	o, err := ParseArgs([]string{"-spawn", "1", "-clients", "60", "-users", "30", "-recipients", "5",
		"-messages", "300", "-rate", "1000", "-payload", "300", "-workers", "0"})
	if err != nil {
		t.Fatal(err)
	}
	o.Exe = bin
	var log syncBuffer
	sum, err := Run(t.Context(), o, &log)
	t.Logf("log:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(sum)
	if err != nil {
		t.Fatal(err)
	}
	// 300 sends × 5 users × 2 devices each.
	pids := checkSendSummary(t, raw, 300, 3000)
	if len(sum.Workers) != 1 || sum.Workers[0].PID != 0 || sum.Workers[0].Clients != 60 {
		t.Errorf("workers: %+v, want one in-process with 60 clients", sum.Workers)
	}
	if sum.Sends.Rate > 1100 {
		t.Errorf("-rate 1000 made %v sends/s", sum.Sends.Rate)
	}
	var text bytes.Buffer
	sum.writeText(&text)
	for _, want := range []string{"300 ok of 300", "3000 expected, 3000 received, 0 missing", "latency      p50 "} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text summary lacks %q:\n%s", want, text.String())
		}
	}
	checkAllEnded(t, pids, log.String())
}

// TestBenchInterrupt cancels a run once it sends (as Ctrl-C does): it must
// return at once, say it was interrupted, and leave nothing running.
func TestBenchInterrupt(t *testing.T) {
	bin := wsmeshBinary(t)
	o, err := ParseArgs([]string{"-spawn", "1", "-clients", "20", "-rate", "200", "-duration", "1m", "-workers", "0"})
	if err != nil {
		t.Fatal(err)
	}
	o.Exe = bin
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	log := &syncBuffer{trigger: "bench: sending", fire: cancel}
	start := time.Now()
	sum, err := Run(ctx, o, log)
	took := time.Since(start)
	t.Logf("returned after %s: %v\nlog:\n%s", took.Round(time.Millisecond), err, log.String())
	if err == nil || err.Error() != "interrupted" || sum == nil || !sum.Interrupted {
		t.Fatalf("want an interrupted run, got %v, %+v", err, sum)
	}
	if took > 30*time.Second {
		t.Errorf("took %s to stop after the interrupt", took)
	}
	var pids []int
	for _, n := range sum.Nodes {
		pids = append(pids, n.PID)
	}
	checkAllEnded(t, pids, log.String())
}

// TestBenchExternalNode runs bench against a node it did not start, given
// with -nodes and -config (tokens from its jwt_secret, /send and /metrics
// with its api key, RSS from /metrics).
func TestBenchExternalNode(t *testing.T) {
	bin := wsmeshBinary(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "node.toml")
	cfg := `[node]
name = "ext"
[http]
listen = "127.0.0.1:0"
[cluster]
bind = "127.0.0.1:0"
[auth]
jwt_secret = "loadgen-test-secret-0123456789-abcdefghij"
api_keys = ["loadgen-test-key"]
[log]
format = "json"
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// Its "node serving" log line gives the address it listens on.
	node := exec.Command(bin, "serve", "-config", cfgPath)
	node.Env = nodeEnv()
	stderr, err := node.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = node.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("node: %v", err)
			}
		case <-time.After(20 * time.Second):
			_ = node.Process.Kill()
			t.Errorf("node did not stop within 20s of SIGINT: killed")
			<-exited
		}
	})
	addr := make(chan string, 1)
	go func() {
		dec := json.NewDecoder(stderr)
		for {
			var m struct{ Msg, HTTP string }
			if dec.Decode(&m) != nil {
				break
			}
			if m.Msg == "node serving" {
				addr <- m.HTTP
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		exited <- node.Wait()
	}()
	var httpAddr string
	select {
	case httpAddr = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatal("the node did not log that it serves within 20s")
	}

	o, err := ParseArgs([]string{"-nodes", "http://" + httpAddr, "-config", cfgPath, "-clients", "20", "-recipients", "4",
		"-messages", "200", "-workers", "0"})
	if err != nil {
		t.Fatal(err)
	}
	o.Exe = bin
	var log syncBuffer
	sum, err := Run(t.Context(), o, &log)
	t.Logf("log:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(sum)
	if len(sum.Nodes) != 1 || sum.Nodes[0].Name != "ext" || sum.Nodes[0].RSSFrom != "/metrics" || sum.Nodes[0].PID != 0 ||
		sum.Nodes[0].RSSBefore <= 0 || sum.Nodes[0].RSSAfter <= 0 || sum.Nodes[0].Sessions != 20 {
		t.Errorf("nodes: %+v", sum.Nodes)
	}
	if sum.Sends == nil || sum.Sends.OK != 200 || sum.Messages == nil || sum.Messages.Received != 800 || sum.Messages.Missing != 0 {
		t.Errorf("summary: %s", raw)
	}
}

// TestBenchRoom runs a -room run in this process (-workers 0: the clients'
// joins and receipts run under -race too) on two spawned nodes: every
// publish must reach every member once, the last-member latencies must
// cover every publish, the join probes must all succeed, and each node
// must receive one relay item per publish made through the other.
func TestBenchRoom(t *testing.T) {
	bin := wsmeshBinary(t)
	const clients, publishes = 20, 100
	o, err := ParseArgs([]string{"-spawn", "2", "-clients", "20", "-room", "live:1", "-publishers", "3",
		"-messages", "100", "-join-probes", "5", "-workers", "0"})
	if err != nil {
		t.Fatal(err)
	}
	o.Exe = bin
	var log syncBuffer
	sum, err := Run(t.Context(), o, &log)
	t.Logf("log:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(sum)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	sum.writeText(&text)
	t.Logf("summary:\n%s", text.String())

	if sum.Mode != "room" || sum.Sends != nil || sum.Publishes == nil || len(sum.Warnings) > 0 {
		t.Fatalf("mode %q, sends %v, publishes %v, warnings %v", sum.Mode, sum.Sends, sum.Publishes, sum.Warnings)
	}
	if p := sum.Publishes; p.OK != publishes || p.Started != publishes || p.HTTPErrors+p.TransportErrors != 0 {
		t.Errorf("publishes: %+v", p)
	}
	m := sum.Messages
	if sum.Results.Delivered != clients*publishes || sum.Results.Unreachable != 0 ||
		m.Expected != clients*publishes || m.Received != clients*publishes || m.Missing != 0 || m.Extra != 0 || m.Unparsed != 0 {
		t.Errorf("results %+v, messages %+v: want %d delivered and received", sum.Results, m, clients*publishes)
	}
	rs := sum.Room
	if rs == nil || rs.Room != "live:1" || rs.Members != clients || rs.Joined != clients || rs.JoinErrors != 0 ||
		rs.JoinLatency.Count != clients || rs.JoinedS <= 0 {
		t.Fatalf("room: %+v", rs)
	}
	if rs.LastMember.Count != publishes || rs.LastMemberIncomplete != 0 || rs.LastMember.MaxMS != sum.Latency.MaxMS ||
		rs.LastMember.P50MS < sum.Latency.P50MS {
		t.Errorf("last member %+v (incomplete %d), every member %+v", rs.LastMember, rs.LastMemberIncomplete, *sum.Latency)
	}
	if pr := rs.Probes; pr == nil || pr.Probes != 5 || pr.OK != 5 || pr.FirstPublish.Count != 5 || pr.Joined.Count != 5 ||
		pr.PublishCalls < 0 || pr.FirstPublish.MinMS < pr.Joined.MinMS { // calls whose answer came after the message are not counted: the mean may be under 1
		t.Errorf("join probes: %+v", pr)
	}
	for _, n := range sum.Nodes {
		if n.RoomMembers != clients/2 || n.FanoutItems == nil || n.PublishesElsewhere == nil ||
			*n.FanoutItems != *n.PublishesElsewhere || *n.PublishesElsewhere == 0 {
			t.Errorf("node %s: %d members, relay items %v for %v publishes via the other", n.Name, n.RoomMembers, n.FanoutItems, n.PublishesElsewhere)
		}
	}
	for _, want := range []string{`"publishes":{`, `"last_member_latency":{`, `"join_probes":{`, `"first_publish":{`, `"fanout_items_received":`} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("JSON summary lacks %s:\n%s", want, raw)
		}
	}
	for _, want := range []string{"100 ok of 100", "2000 expected, 2000 received, 0 missing", "last member  p50 ",
		"join → first publish from another node: p50 ", "relay items  received: n1 "} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text summary lacks %q", want)
		}
	}
	var pids []int
	for _, n := range sum.Nodes {
		pids = append(pids, n.PID)
	}
	checkAllEnded(t, pids, log.String())
}
