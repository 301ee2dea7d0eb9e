package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"wsmesh/internal/faultnet"
	"wsmesh/internal/node"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// readyz returns a node's GET /readyz status and reasons (no API key).
func readyz(t *testing.T, c *testsupport.Client) (int, []string) {
	t.Helper()
	code, out, _ := c.APIAuth(t, http.MethodGet, "/readyz", "", "")
	var reasons []string
	if rs, ok := out["reasons"].([]any); ok {
		for _, r := range rs {
			reasons = append(reasons, fmt.Sprint(r))
		}
	}
	want := "ready"
	if code != http.StatusOK {
		want = "not ready"
	}
	if out["status"] != want || (code == http.StatusOK) != (len(reasons) == 0) {
		t.Fatalf("GET /readyz: %d %v", code, out)
	}
	return code, reasons
}

// gate holds stream dials to some addresses until it opens: a link whose
// batches are slow to arrive, neither delivered nor failed.
type gate struct {
	mu   sync.Mutex
	held map[string]bool // gossip addresses whose dials wait
	open chan struct{}
	once sync.Once
}

func newGate(held ...string) *gate {
	g := &gate{held: map[string]bool{}, open: make(chan struct{})}
	for _, a := range held {
		g.held[a] = true
	}
	return g
}

func (g *gate) Open() { g.once.Do(func() { close(g.open) }) }

// wrap is a node.Hooks.WrapTransport.
func (g *gate) wrap(inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
	return &gatedTransport{NodeAwareTransport: inner, g: g}
}

type gatedTransport struct {
	memberlist.NodeAwareTransport
	g *gate
}

func (t *gatedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	t.g.mu.Lock()
	held := t.g.held[a.Addr]
	t.g.mu.Unlock()
	if held {
		<-t.g.open
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

func (t *gatedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// TestReadyzJoinerWaitsForPeerTables: a node that joins answers GET
// /readyz 503 naming the member whose session table it does not hold yet
// (t2's link to it is held: no snapshot arrives, nothing fails), and 200
// once it arrives; then it routes t2's user. wsmesh_ready follows.
func TestReadyzJoinerWaitsForPeerTables(t *testing.T) {
	t3Addr := fmt.Sprintf("127.0.0.1:%d", testsupport.FreePort(t))
	toT3 := newGate(t3Addr) // t2 -> t3
	nodes := nodetest.StartCluster(t, 2, func(i int, s *nodetest.Setup) {
		if i == 1 {
			s.Hooks.WrapTransport = toT3.wrap
		}
	})
	t1, t2 := nodes[0], nodes[1]
	t.Cleanup(toT3.Open) // before the nodes stop (cleanups run last first)
	t2.Dial(t, t2.Token(t, "w", ""), testsupport.DialOpts{})
	nodetest.WaitRoutable(t, nodes, "w", "t2")
	for _, n := range nodes {
		if code, reasons := readyz(t, n.Client); code != http.StatusOK {
			t.Fatalf("%s not ready: %v", n.Cfg.Node.Name, reasons)
		}
	}

	toT2 := newGate(t2.Cluster().Addr()) // t3 -> t2: its batches neither arrive nor fail
	t.Cleanup(toT2.Open)
	cfg := nodetest.Config(t)
	cfg.Node.Name = "t3"
	cfg.Cluster.Bind = t3Addr
	cfg.Cluster.Seeds = []string{t1.Cluster().Addr()}
	t3 := nodetest.StartHooks(t, cfg, node.Hooks{Tune: faultnet.FastGossip, RejoinInterval: 500 * time.Millisecond, WrapTransport: toT2.wrap})
	t.Cleanup(func() { toT2.Open(); toT3.Open() })

	var reasons []string
	testsupport.WaitFor(t, "t3 to wait for t2's table only", func() bool {
		var code int
		code, reasons = readyz(t, t3.Client)
		return code == http.StatusServiceUnavailable && slices.Equal(reasons, []string{"no session table from t2 yet"})
	})
	if m := t3.Metrics(t); !strings.Contains(m, "\nwsmesh_ready 0\n") {
		t.Fatalf("t3's /metrics lacks wsmesh_ready 0 while not ready")
	}
	if ok, _ := t3.Readiness(); ok {
		t.Fatal("Node.Readiness ready while /readyz is 503")
	}

	toT3.Open()
	toT2.Open()
	took := testsupport.PollUntil(t, "t3 ready", testsupport.WaitLimit, func() bool {
		code, _ := readyz(t, t3.Client)
		return code == http.StatusOK
	})
	t.Logf("t3 ready %s after t2's link opened", took)
	if o := t3.Cluster().Owners("w"); !slices.Equal(o, []string{"t2"}) {
		t.Fatalf("t3 ready but routes w to %v", o)
	}
	if m := t3.Metrics(t); !strings.Contains(m, "\nwsmesh_ready 1\n") {
		t.Fatalf("t3's /metrics lacks wsmesh_ready 1 once ready")
	}
}

// TestReadyzShuttingDown: once shutdown begins the node is not ready,
// saying "shutting down", while /healthz served until then.
func TestReadyzShuttingDown(t *testing.T) {
	n := nodetest.Start(t, nodetest.Config(t))
	if code, reasons := readyz(t, n.Client); code != http.StatusOK {
		t.Fatalf("lone node not ready: %v", reasons)
	}
	n.BeginStop()
	testsupport.WaitFor(t, "the node to say it is shutting down", func() bool {
		ok, reasons := n.Readiness()
		return !ok && len(reasons) > 0 && reasons[0] == "shutting down"
	})
	n.Stop(t)
	if ok, reasons := n.Readiness(); ok || !slices.Equal(reasons, []string{"shutting down"}) {
		t.Fatalf("after shutdown: %v %v", ok, reasons)
	}
}

// TestReadyNotifyBounded: systemd's READY=1 waits for readiness, but not
// for ever: a node whose seeds are all down (the first of a cluster, the
// last one standing) sends it after Hooks.ReadyWait anyway, serving, while
// GET /readyz still answers 503 naming the reason.
func TestReadyNotifyBounded(t *testing.T) {
	short, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })
	sock := filepath.Join(short, "notify.sock")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)

	cfg := nodetest.Config(t)
	cfg.Cluster.Seeds = []string{fmt.Sprintf("127.0.0.1:%d", testsupport.FreePort(t))} // nobody there
	const wait = 500 * time.Millisecond
	start := time.Now()
	n := nodetest.StartHooks(t, cfg, node.Hooks{ReadyWait: wait, RejoinInterval: time.Hour})
	if err := l.SetReadDeadline(time.Now().Add(testsupport.WaitLimit)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	k, err := l.Read(buf)
	if err != nil {
		t.Fatalf("no READY=1: %v", err)
	}
	took := time.Since(start)
	if got := strings.TrimSpace(string(buf[:k])); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	if took < wait {
		t.Fatalf("READY=1 after %s, before ReadyWait (%s) although not ready", took, wait)
	}
	code, reasons := readyz(t, n.Client)
	if code != http.StatusServiceUnavailable || len(reasons) != 1 || !strings.HasPrefix(reasons[0], "not joined: no seed answered yet") {
		t.Fatalf("GET /readyz with the seeds down: %d %q", code, reasons)
	}
	t.Logf("READY=1 after %s with the seeds down; /readyz: %q", took.Round(time.Millisecond), reasons)
}

// TestSendUnreachableOwner: when the node holding a user's session stops
// answering (its packets vanish, or its host refuses connections), /send
// on another node answers "unreachable" for that user within a second,
// naming the node, counted apart from offline; /readyz on the others
// stays 200; /metrics counts it, and times the call by node.
func TestSendUnreachableOwner(t *testing.T) {
	for _, mode := range []string{"silent", "refused"} {
		t.Run(mode, func(t *testing.T) {
			fn := faultnet.New(1)
			nodes := nodetest.StartCluster(t, 3, nodetest.FaultNet(fn))
			t1, t2, t3 := nodes[0], nodes[1], nodes[2]
			t3.Dial(t, t3.Token(t, "v", "web"), testsupport.DialOpts{})
			nodetest.WaitRoutable(t, nodes, "v", "t3")
			t1.Send(t, `{"users":["nobody"],"data":0}`) // warm the keep-alive connection

			if mode == "silent" {
				fn.Silence("t3")
			} else {
				fn.Isolate("t3")
			}
			start := time.Now()
			out := t1.Send(t, `{"users":["v","nobody"],"data":"anyone there?"}`)
			took := time.Since(start)
			t.Logf("send to v on cut-off t3 answered in %s: %v", took, out)
			if out["unreachable"] != 1.0 || out["offline"] != 1.0 || out["delivered"] != 0.0 || out["failed"] != 0.0 {
				t.Fatalf("counts: %v, want 1 unreachable (v), 1 offline (nobody)", out)
			}
			res := out["results"].([]any)
			if r := res[0].(map[string]any); len(res) != 2 || r["user"] != "v" || r["node"] != "t3" || r["status"] != "unreachable" || r["device"] != nil {
				t.Fatalf("results %v, want v unreachable on t3 first", res)
			}
			if r := res[1].(map[string]any); r["user"] != "nobody" || r["status"] != "offline" || r["node"] != nil {
				t.Fatalf("results %v, want nobody offline", res)
			}
			if took >= time.Second {
				t.Fatalf("send took %s, want < 1s", took)
			}
			for _, n := range []*nodetest.Node{t1, t2} {
				if code, reasons := readyz(t, n.Client); code != http.StatusOK {
					t.Fatalf("%s not ready while t3 is cut off: %v", n.Cfg.Node.Name, reasons)
				}
			}
			m := t1.Metrics(t)
			if !strings.Contains(m, "\nwsmesh_unreachable_total 1\n") {
				t.Errorf("t1's /metrics lacks wsmesh_unreachable_total 1")
			}
			if !strings.Contains(m, "\nwsmesh_offline_total 2\n") { // nobody, twice
				t.Errorf("t1's /metrics lacks wsmesh_offline_total 2")
			}
			if !regexp.MustCompile(`\nwsmesh_relay_forward_seconds_count\{node="t3",result="(timeout|unreachable)"\} 1\n`).MatchString(m) {
				t.Errorf("t1's /metrics has no failed forward to t3:\n%s", grepLines(m, "wsmesh_relay_forward_seconds_count"))
			}
			// The link counters say which peer fails: t3, not t2.
			failed := regexp.MustCompile(`\nwsmesh_relay_(ack_timeouts|send_failures)_total\{peer="t3"\} [1-9]`)
			if !failed.MatchString(m) || !strings.Contains(m, "\nwsmesh_relay_ack_timeouts_total{peer=\"t2\"} 0\n") {
				t.Errorf("t1's /metrics does not single out its link to t3:\n%s", grepLines(m, "wsmesh_relay_"))
			}

			// Once gossip declares t3 dead, its sessions leave the table:
			// v is offline, and t1 is still ready.
			testsupport.PollUntil(t, "t1 to drop t3's sessions", 3*testsupport.WaitLimit, func() bool { return len(t1.Cluster().Owners("v")) == 0 })
			if out := t1.Send(t, `{"users":["v"],"data":"and now?"}`); out["offline"] != 1.0 || out["unreachable"] != 0.0 {
				t.Fatalf("send to v once t3 is dead: %v, want offline", out)
			}
			if code, reasons := readyz(t, t1.Client); code != http.StatusOK {
				t.Fatalf("t1 not ready once t3 is dead: %v", reasons)
			}
		})
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
