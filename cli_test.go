package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"wsmesh/session"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "wsmesh.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCLI(t *testing.T) {
	good := writeFile(t, "[auth]\njwt_secret = \""+testSecret+"\"\n")
	bad := writeFile(t, "[session]\nsend_qeue = 5\n")
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string // substring expected on stdout
		stderr string // substring expected on stderr
	}{
		{"help flag", []string{"-h"}, 0, "Usage:", ""},
		{"help command", []string{"help"}, 0, "wsmesh token", ""},
		{"token help", []string{"token", "-h"}, 0, "Usage:", ""},
		{"version", []string{"version"}, 0, "wsmesh ", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"unknown flag", []string{"serve", "-bogus"}, 2, "", "bogus"},
		{"stray argument", []string{"serve", "extra"}, 2, "", `unexpected argument "extra"`},
		{"token without user", []string{"token", "-config", good}, 2, "", "-user is required"},
		{"token bad ttl", []string{"token", "-user", "1", "-ttl", "soon", "-config", good}, 2, "", "ttl"},
		{"serve bad config", []string{"serve", "-config", bad}, 1, "", "session.send_qeue"},
		{"token bad config", []string{"token", "-user", "1", "-config", bad}, 1, "", bad},
		{"serve missing config", []string{"-config", "/nonexistent/x.toml"}, 1, "", "/nonexistent/x.toml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if tc.code == 2 && !strings.Contains(errb.String(), "Usage:") {
				t.Fatal("usage error without usage on stderr")
			}
		})
	}
}

func TestTokenCommand(t *testing.T) {
	cfgPath := writeFile(t, "[auth]\njwt_secret = \""+testSecret+"\"\n")
	var out, errb bytes.Buffer
	if code := run([]string{"token", "-user", "42", "-device", "app", "-ttl", "5m", "-config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	a, _ := session.NewAuthenticator([]byte(testSecret))
	id, err := a.Verify(lines[len(lines)-1])
	if err != nil || id.User != "42" || id.Device != "app" {
		t.Fatalf("token on the last line: %v %+v", err, id)
	}

	t.Chdir(t.TempDir()) // no ./config.toml: a random secret would be useless
	errb.Reset()
	if code := run([]string{"token", "-user", "42"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "jwt_secret") {
		t.Fatalf("token with no config: exit %d, %s", code, errb.String())
	}
}

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
jwt_secret = "`+testSecret+`"
api_keys = ["`+testAPIKey+`"]
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
		case <-time.After(waitLimit):
			t.Fatal("node did not log that it serves")
		}
	}
	cfg := testConfig(t)
	tn := &testNode{node: &node{ln: fixedAddr(addr)}, cfg: cfg}
	c := tn.dial(t, tn.token(t, "proc", ""), dialOpts{})
	// The node registers a session just after its 101 goes out.
	waitFor(t, "the process to register the session", func() bool {
		_, cl, _ := tn.api(t, "GET", "/cluster", "")
		m, _ := cl["members"].([]any)
		return len(m) > 0 && m[0].(map[string]any)["sessions"] == 1.0
	})
	if out := tn.send(t, `{"users":["proc"],"data":"hi"}`); out["delivered"] != 1.0 {
		t.Fatalf("send to the process: %v", out)
	}
	c.next(t)

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, reason := c.waitClose(t); code != 1012 {
		t.Fatalf("client closed with %d %q, want 1012", code, reason)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("process did not exit after SIGTERM")
	}
	t.Logf("SIGTERM to exit: %s", time.Since(start))
}
