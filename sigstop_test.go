package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
)

// TestProcessSIGSTOPOwnerUnreachable runs three nodes as processes and
// SIGSTOPs the one holding a client: the process is there (its sockets
// accept, gossip still lists it alive for seconds) but answers nothing.
// /send on another node must answer "unreachable" for that user within
// 1 s, naming the node, and GET /readyz on the two others must stay 200,
// right away and once they see it suspect. SIGCONT brings it back.
func TestProcessSIGSTOPOwnerUnreachable(t *testing.T) {
	bin := buildBinary(t)
	p1, p2, p3 := startProcCluster(t, bin)
	c := p3.api.Dial(t, p3.api.Token(t, "k", "app"), testsupport.DialOpts{})
	testsupport.PollUntil(t, "p1 to know p3's session", testsupport.WaitLimit, func() bool { return p1.members(t)["p3"]["sessions"] == 1.0 })
	out := p1.api.Send(t, `{"users":["k"],"data":"before"}`)
	if out["delivered"] != 1.0 {
		t.Fatalf("send on p1 to k on p3: %v", out)
	}
	if f := c.Next(t); f["id"] != out["id"] {
		t.Fatalf("k got %v, want %v", f, out["id"])
	}
	for _, p := range []*procNode{p1, p2, p3} {
		testsupport.PollUntil(t, p.name+" ready", testsupport.WaitLimit, func() bool {
			code, _ := readyz(t, p.api)
			return code == http.StatusOK
		})
	}

	pid := p3.cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) // runs before the kill of p3's cleanup
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The signal is delivered to each thread as it next runs: wait until
	// every one of them is stopped, or the node may still answer.
	testsupport.PollUntil(t, "every thread of p3 stopped", testsupport.WaitLimit, func() bool { return allThreadsStopped(t, pid) })
	stoppedAt := time.Now()
	out, took := timedSend(t, p1.api, `{"users":["k"],"data":"are you there?"}`)
	t.Logf("send on p1 to k on stopped p3 answered in %s: %v (p1 sees p3 %v)", took, out["results"], p1.members(t)["p3"]["state"])
	if out["unreachable"] != 1.0 || out["offline"] != 0.0 || out["delivered"] != 0.0 {
		t.Fatalf("send to k on stopped p3: %v, want unreachable", out)
	}
	res := out["results"].([]any)
	if r := res[0].(map[string]any); len(res) != 1 || r["user"] != "k" || r["node"] != "p3" || r["status"] != "unreachable" {
		t.Fatalf("results %v, want k unreachable on p3", res)
	}
	if took >= time.Second {
		t.Fatalf("send to k on stopped p3 took %s, want < 1s", took)
	}
	checkReady := func(when string) {
		t.Helper()
		for _, p := range []*procNode{p1, p2} {
			if code, reasons := readyz(t, p.api); code != http.StatusOK {
				t.Fatalf("%s: %s not ready: %v", when, p.name, reasons)
			}
		}
	}
	checkReady("right after the send")
	suspect := testsupport.PollUntil(t, "p1 to list p3 suspect or dead", 3*testsupport.WaitLimit, func() bool {
		st := p1.members(t)["p3"]["state"]
		return st == "suspect" || st == "dead"
	})
	checkReady("p3 " + p1.members(t)["p3"]["state"].(string))
	t.Logf("p1 listed p3 %v %s after SIGSTOP; p1 and p2 ready throughout", p1.members(t)["p3"]["state"], suspect)
	if out, _ := timedSend(t, p1.api, `{"users":["k"],"data":"still?"}`); out["delivered"] != 0.0 || out["unreachable"].(float64)+out["offline"].(float64) != 1 {
		t.Fatalf("second send to k on stopped p3: %v", out)
	}
	t.Logf("stopped for %s", time.Since(stoppedAt))
}

// allThreadsStopped reports whether every thread of process pid is in
// state T (stopped), from /proc/PID/task/*/stat.
func allThreadsStopped(t *testing.T, pid int) bool {
	t.Helper()
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(stats) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			return false // a thread that just ended
		}
		// "tid (comm) S ...": the state follows the last ")".
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}
