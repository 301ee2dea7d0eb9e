package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
)

// TestProcessKillAndRestart runs three nodes as processes, SIGKILLs one
// that holds a client, expects its user unreachable at once on another node,
// restarts it with the same name and addresses, and expects a new client
// there to be reachable again from the first node. Two rounds: a restart
// at once (the others still list the old run alive or suspect: the new run
// is told apart by its boot epoch), then a restart once the others have
// declared it dead (it must re-join under the same name and address).
func TestProcessKillAndRestart(t *testing.T) {
	bin := buildBinary(t)
	p1, p2, p3 := startProcCluster(t, bin)
	procs := []*procNode{p1, p2, p3}

	c := p3.api.Dial(t, p3.api.Token(t, "k", ""), testsupport.DialOpts{})
	testsupport.PollUntil(t, "p1 to know p3's session", testsupport.WaitLimit, func() bool { return p1.members(t)["p3"]["sessions"] == 1.0 })
	out := p1.api.Send(t, `{"users":["k"],"data":"before kill"}`)
	if out["delivered"] != 1.0 {
		t.Fatalf("send on p1 to k on p3: %v", out)
	}
	if f := c.Next(t); f["id"] != out["id"] {
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
		case <-c.Closed():
		case <-time.After(testsupport.WaitLimit):
			t.Fatalf("%s: client on p3 still connected after SIGKILL", round)
		}
		out, took := timedSend(t, p1.api, `{"users":["k"],"data":"after kill"}`)
		t.Logf("%s: send on p1 to k on killed p3 answered in %s: %v (p1 sees p3 %v)", round, took, out["results"], p1.members(t)["p3"]["state"])
		// p1's table still lists k on p3 (gossip has not declared it dead
		// yet): unreachable; offline only if p1 already dropped p3.
		if out["delivered"] != 0.0 || (out["unreachable"] != 1.0 && !(out["offline"] == 1.0 && p1.members(t)["p3"]["state"] == "dead")) {
			t.Fatalf("%s: send to k on killed p3: %v, want unreachable", round, out)
		}
		if took >= time.Second {
			t.Fatalf("%s: send to k on killed p3 took %s, want < 1s", round, took)
		}
		if waitDead {
			var suspect time.Duration
			dead := testsupport.PollUntil(t, "p1 to declare p3 dead", 3*testsupport.WaitLimit, func() bool {
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
		c = p3.api.Dial(t, p3.api.Token(t, "k", ""), testsupport.DialOpts{})

		// Poll /send on p1 until the new session is reachable; the client
		// must then receive the message that was reported delivered.
		var tries int
		var deliveredID any
		deadline := time.NewTimer(2 * testsupport.WaitLimit)
		tick := time.NewTicker(20 * time.Millisecond)
		for deliveredID == nil {
			out := p1.api.Send(t, fmt.Sprintf(`{"users":["k"],"data":%d}`, tries))
			tries++
			if out["delivered"] == 1.0 {
				deliveredID = out["id"]
				break
			}
			select {
			case <-tick.C:
			case <-deadline.C:
				t.Fatalf("%s: p1's /send to k on restarted p3 not delivered within %s (%d tries); last: %v", round, 2*testsupport.WaitLimit, tries, out)
			}
		}
		deadline.Stop()
		tick.Stop()
		t.Logf("%s: p1 reached the new k on p3 %s after the restart, on try %d", round, time.Since(restartAt), tries)
		for i := 0; ; i++ {
			f := c.Next(t)
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

		testsupport.PollUntil(t, "p1's /cluster to show p3 alive with 1 session", testsupport.WaitLimit, func() bool {
			m := p1.members(t)["p3"]
			return m["state"] == "alive" && m["sessions"] == 1.0
		})
		for _, p := range procs {
			testsupport.PollUntil(t, p.name+" to see 3 alive members after the restart", testsupport.WaitLimit, func() bool { return p.allAlive(t, "p1", "p2", "p3") })
		}
		testsupport.PollUntil(t, "p2's /cluster to show p3 with 1 session", testsupport.WaitLimit, func() bool { return p2.members(t)["p3"]["sessions"] == 1.0 })
		t.Logf("%s: cluster whole again %s after the restart", round, time.Since(restartAt))
	}
}

// TestProcessSIGTERM runs the built binary, connects a client, sends
// SIGTERM and expects 1012 for the client and exit status 0.
func TestProcessSIGTERM(t *testing.T) {
	bin := buildBinary(t)
	cfgPath := writeFile(t, `
[node]
name = "p1"
shutdown_timeout = "5s"
[http]
listen = "127.0.0.1:0"
[cluster]
bind = "127.0.0.1:0"
[auth]
jwt_secret = "`+testsupport.Secret+`"
api_keys = ["`+testsupport.APIKey+`"]
[log]
format = "json"
`)
	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	cmd.Env = os.Environ()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				t.Errorf("log line is not JSON: %q", sc.Text())
				continue
			}
			select {
			case lines <- m:
			default:
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	var addr string
	for addr == "" {
		select {
		case m := <-lines:
			if m["msg"] == "node serving" {
				addr, _ = m["http"].(string)
			}
		case err := <-exited:
			t.Fatalf("node exited before serving: %v", err)
		case <-time.After(testsupport.WaitLimit):
			t.Fatal("node did not log that it serves")
		}
	}
	tn := testsupport.NewClient(addr, testsupport.Secret, testsupport.APIKey)
	c := tn.Dial(t, tn.Token(t, "proc", ""), testsupport.DialOpts{})
	// The node registers a session just after its 101 goes out.
	testsupport.WaitFor(t, "the process to register the session", func() bool {
		_, cl, _ := tn.API(t, "GET", "/cluster", "")
		m, _ := cl["members"].([]any)
		return len(m) > 0 && m[0].(map[string]any)["sessions"] == 1.0
	})
	if out := tn.Send(t, `{"users":["proc"],"data":"hi"}`); out["delivered"] != 1.0 {
		t.Fatalf("send to the process: %v", out)
	}
	c.Next(t)

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, reason := c.WaitClose(t); code != 1012 {
		t.Fatalf("client closed with %d %q, want 1012", code, reason)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(testsupport.WaitLimit):
		t.Fatal("process did not exit after SIGTERM")
	}
	t.Logf("SIGTERM to exit: %s", time.Since(start))
}
