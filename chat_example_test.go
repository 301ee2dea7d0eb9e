package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"wsmesh/config"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
	"wsmesh/upstream"
)

// TestChatExample runs examples/chat as a process, a node whose upstream
// is that example, and two clients: a message from A to B goes through the
// example's webhook and POST /send, B gets it, A gets the ack and the
// example's delivery summary. The example refuses a bad signature.
func TestChatExample(t *testing.T) {
	nodeAddr := fmt.Sprintf("127.0.0.1:%d", testsupport.FreePort(t))
	chat := startChatExample(t, "-listen", "127.0.0.1:0", "-node", "http://"+nodeAddr,
		"-api-key", testsupport.APIKey, "-jwt-secret", testsupport.Secret, "-secret", config.SampleUpstreamSecret)

	cfg := nodetest.Config(t)
	cfg.HTTP.Listen = nodeAddr
	cfg.Upstream.URL = "http://" + chat + "/events"
	cfg.Upstream.Secret = config.SampleUpstreamSecret
	n := nodetest.Start(t, cfg)

	// A's token comes from the example, as the chat page gets it.
	resp, tokA := testsupport.Do(t, "GET", "http://"+chat+"/token?user=A&device=tab-1", nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /token: %d %s", resp.StatusCode, tokA)
	}
	a := n.Dial(t, tokA, testsupport.DialOpts{})
	if w := a.Welcome(t); w["user"] != "A" || w["device"] != "tab-1" {
		t.Fatalf("A's welcome %v", w)
	}
	b := n.Dial(t, n.Token(t, "B", "web"), testsupport.DialOpts{})
	b.Welcome(t)

	a.Write(t, `{"type":"message","id":"c1","data":{"to":"B","text":"hi"}}`)
	if f := b.Next(t); f["type"] != "message" || fmt.Sprint(f["data"]) != "map[from:A text:hi]" {
		t.Fatalf("B got %v, want the message from A", f)
	}
	if f := a.Next(t); f["type"] != "ack" || f["id"] != "c1" {
		t.Fatalf("A got %v, want ack c1", f)
	}
	if f := a.Next(t); f["type"] != "reply" || f["id"] != "c1" || fmt.Sprint(f["data"]) != "map[delivered:1 offline:0]" {
		t.Fatalf("A got %v, want the reply to c1: delivered 1", f)
	}

	for _, tc := range []struct{ id, data, reply string }{
		{"c2", `{"to":"nobody","text":"hello?"}`, "map[delivered:0 offline:1]"},
		{"c3", `"just text"`, `map[error:want {"to":"<user>","text":"..."}]`},
	} {
		a.Write(t, fmt.Sprintf(`{"type":"message","id":%q,"data":%s}`, tc.id, tc.data))
		id := tc.id
		if f := a.Next(t); f["type"] != "ack" || f["id"] != id {
			t.Fatalf("A got %v, want ack %s", f, id)
		}
		if f := a.Next(t); f["type"] != "reply" || f["id"] != id || fmt.Sprint(f["data"]) != tc.reply {
			t.Fatalf("A got %v, want the reply %s to %s", f, tc.reply, id)
		}
	}

	body := `{"events":[]}`
	now := strconv.FormatInt(time.Now().Unix(), 10)
	stale := strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)
	for _, tc := range []struct {
		name, ts, sig string
		want          int
	}{
		{"good", now, upstream.Sign([]byte(config.SampleUpstreamSecret), now, []byte(body)), 200},
		{"wrong secret", now, upstream.Sign([]byte("another-secret-of-at-least-32-bytes!!"), now, []byte(body)), 401},
		{"no signature", now, "", 401},
		{"stale timestamp", stale, upstream.Sign([]byte(config.SampleUpstreamSecret), stale, []byte(body)), 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Wsmesh-Timestamp": {tc.ts}, "Wsmesh-Signature": {tc.sig}, "Content-Type": {"application/json"}}
			if resp, got := testsupport.Do(t, "POST", "http://"+chat+"/events", h, body); resp.StatusCode != tc.want {
				t.Fatalf("POST /events: %d %s, want %d", resp.StatusCode, got, tc.want)
			}
		})
	}
}

// startChatExample builds examples/chat, runs it with args and returns its
// address, read from its "listening on" line. Its log goes to the test's;
// it is killed when the test ends, after the cleanups registered later
// (a node's shutdown still reaches it).
func startChatExample(t *testing.T, args ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "chat")
	if out, err := exec.Command("go", "build", "-o", bin, "./examples/chat").CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/chat: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := testsupport.NewLogWriter(t)
	addr := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		listening := regexp.MustCompile(`listening on http://(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.Write([]byte("chat: " + sc.Text()))
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-readDone
		_ = cmd.Wait()
	})
	select {
	case a := <-addr:
		return a
	case <-readDone:
		t.Fatal("the chat example exited before it listened")
	case <-time.After(testsupport.WaitLimit):
		t.Fatalf("the chat example did not listen within %s", testsupport.WaitLimit)
	}
	return ""
}

// TestChatReadmeSignatureSnippets runs the README's Python and Node.js
// signature checks ("Verifying the signature") on requests signed as a
// node signs them: they accept those and refuse tampered, stale or
// missing signatures.
func TestChatReadmeSignatureSnippets(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start, end := strings.Index(text, "### Verifying the signature"), strings.Index(text, "### The answer")
	if start < 0 || end < start {
		t.Fatal(`README.md lacks "### Verifying the signature" followed by "### The answer"`)
	}
	section := text[start:end]

	secret := []byte(config.SampleUpstreamSecret)
	body := []byte(`{"events":[{"id":"s1:m1","type":"message","data":{"text":"h\u00e9llo ✓ \u003cb\u003e"}}]}`)
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	stale := strconv.FormatInt(now.Add(-6*time.Minute).Unix(), 10)
	type check struct {
		Name, Secret, TS, Sig string
		Body                  []byte // base64 in JSON
		Want                  bool
	}
	checks := []check{
		{"signed", string(secret), ts, upstream.Sign(secret, ts, body), body, true},
		{"body changed", string(secret), ts, upstream.Sign(secret, ts, body), append([]byte(" "), body...), false},
		{"other secret", "another-secret-of-at-least-32-bytes!!", ts, upstream.Sign(secret, ts, body), body, false},
		{"6 minutes old", string(secret), stale, upstream.Sign(secret, stale, body), body, false},
		{"no signature", string(secret), ts, "", body, false},
		{"not a timestamp", string(secret), "12ab", upstream.Sign(secret, "12ab", body), body, false},
	}
	input, err := json.Marshal(checks)
	if err != nil {
		t.Fatal(err)
	}
	for _, lang := range []struct{ fence, tool, file, harness string }{
		{"python", "python3", "check.py", `
import base64, json, sys
for c in json.load(sys.stdin):
    print(verify_wsmesh(c["Secret"].encode(), c["TS"], c["Sig"], base64.b64decode(c["Body"])))
`},
		{"js", "node", "check.cjs", `
const checks = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
for (const c of checks) console.log(verifyWsmesh(c.Secret, c.TS, c.Sig, Buffer.from(c.Body, 'base64')));
`},
	} {
		t.Run(lang.tool, func(t *testing.T) {
			m := regexp.MustCompile("(?s)```" + lang.fence + "\n(.*?)```").FindStringSubmatch(section)
			if m == nil {
				t.Fatalf("README.md: no %s snippet under \"Verifying the signature\"", lang.fence)
			}
			tool, err := exec.LookPath(lang.tool)
			if err != nil {
				t.Skipf("%s not installed", lang.tool)
			}
			file := filepath.Join(t.TempDir(), lang.file)
			if err := os.WriteFile(file, []byte(m[1]+lang.harness), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testsupport.WaitLimit)
			defer cancel()
			cmd := exec.CommandContext(ctx, tool, file)
			cmd.Stdin = bytes.NewReader(input)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", lang.tool, file, err, out)
			}
			got := strings.Fields(strings.ToLower(string(out)))
			if len(got) != len(checks) {
				t.Fatalf("%s printed %q, want one answer per check", lang.tool, out)
			}
			for i, c := range checks {
				if got[i] != strconv.FormatBool(c.Want) {
					t.Errorf("%s: %s answered %s, want %t", c.Name, lang.tool, got[i], c.Want)
				}
			}
		})
	}
}
