package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
	"wsmesh/session"
	"wsmesh/upstream"
)

// The backend snippets of examples/backend/ (one directory per language)
// each take the same arguments: "mint" prints a client token for USER_ID,
// "send" posts {"users":[USER_ID],"data":{"text":"hello from <lang>"}}
// to /send and prints the answer, and "verify SECRET TIMESTAMP SIGNATURE
// BODYFILE" exits 0 if the upstream signature is valid, 1 (saying
// "invalid" on stderr) if not. They read WSMESH_URL, WSMESH_API_KEY,
// WSMESH_JWT_SECRET and USER_ID.

const (
	// snippetJWTSecret is valid base64 (of "snippet-jwt-secret-0123456789"):
	// a snippet that decoded it, instead of signing with its bytes as they
	// are, would mint tokens the node refuses.
	snippetJWTSecret = "c25pcHBldC1qd3Qtc2VjcmV0LTAxMjM0NTY3ODk="
	snippetAPIKey    = "snippet-api-key"
	// snippetUpstreamSecret signs the webhook bodies verify checks; base64
	// too, for the same reason.
	snippetUpstreamSecret = "dXBzdHJlYW0tc2VjcmV0LW9mLTMyLWJ5dGVzLW9yLW1vcmU="
	// snippetRunLimit bounds one run of a snippet (a JVM compiling the
	// source file included).
	snippetRunLimit = 20 * time.Second
)

// snippetLang is how to run one language's snippet.
type snippetLang struct {
	name string
	dir  string // under examples/backend
	// prepare checks that the runtime is there (skipping or failing the
	// test, as testsupport.RequireTool does, if not) and returns how to
	// run the snippet.
	prepare func(t *testing.T, dir string) snippetArgv
}

// snippetArgv is how to run a snippet, in its dir: the mode's arguments
// are appended to argv (verify, to verify if set: the same program,
// quicker to start many times).
type snippetArgv struct {
	argv, verify []string
}

var snippetLangs = []snippetLang{
	{name: "java", dir: "java", prepare: func(t *testing.T, dir string) snippetArgv {
		java := testsupport.RequireTool(t, "java", "openjdk-17-jdk-headless")
		// java Backend.java compiles the file in memory: that needs the
		// JDK's compiler, not only a JRE.
		javac := testsupport.RequireTool(t, "javac", "openjdk-17-jdk-headless")
		// Compiled once more, for Java 11 (which the snippet promises to
		// run on), to run the many verify cases without compiling each time.
		classes := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), snippetRunLimit)
		defer cancel()
		cmd := exec.CommandContext(ctx, javac, "--release", "11", "-Xlint:all", "-Werror", "-d", classes, "Backend.java")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("javac --release 11 Backend.java: %v\n%s", err, out)
		}
		// The flags only make the JVM start faster.
		jvm := []string{java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"}
		return snippetArgv{
			argv:   append(jvm[:len(jvm):len(jvm)], "Backend.java"),
			verify: append(jvm[:len(jvm):len(jvm)], "-cp", classes, "Backend"),
		}
	}},
	{name: "python", dir: "python", prepare: func(t *testing.T, dir string) snippetArgv {
		// Debian's python3, which sees Debian's python3-jwt (another
		// python3 on the PATH, pyenv's say, does not).
		py := testsupport.RequireTool(t, "/usr/bin/python3", "python3")
		if out, err := exec.Command(py, "-c", "import jwt").CombinedOutput(); err != nil {
			snippetMissing(t, fmt.Sprintf("%s cannot import jwt (%v: %s): apt-get install python3-jwt", py, err, bytes.TrimSpace(out)))
		}
		return snippetArgv{argv: []string{py, "backend.py"}}
	}},
	{name: "node", dir: "node", prepare: func(t *testing.T, dir string) snippetArgv {
		node := testsupport.RequireTool(t, "node", "nodejs")
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "jsonwebtoken", "package.json")); err != nil {
			snippetMissing(t, "jsonwebtoken not installed in "+dir+": run `cd "+dir+" && npm ci` (.ci/run does)")
		}
		return snippetArgv{argv: []string{node, "backend.js"}}
	}},
	{name: "go", dir: "go", prepare: func(t *testing.T, dir string) snippetArgv {
		goBin := testsupport.RequireTool(t, "go", "golang-go")
		bin := filepath.Join(t.TempDir(), "backend")
		ctx, cancel := context.WithTimeout(context.Background(), snippetRunLimit)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", dir, err, out)
		}
		return snippetArgv{argv: []string{bin}}
	}},
}

// snippetMissing fails the test on CI, where .ci/run installs what the
// snippets need, and skips it elsewhere.
func snippetMissing(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestSnippets runs each backend snippet against a node in this process:
// the token it mints opens a WebSocket, its /send reaches that client, and
// its verify accepts a body upstream.Sign signed and refuses a tampered
// body, a wrong secret and a timestamp over 5 minutes away.
func TestSnippets(t *testing.T) {
	for _, lang := range snippetLangs {
		t.Run(lang.name, func(t *testing.T) {
			start := time.Now()
			dir := filepath.Join("examples", "backend", lang.dir)
			testSnippet(t, lang.name, dir, lang.prepare(t, dir))
			t.Logf("%s: %s in all", lang.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

func testSnippet(t *testing.T, lang, dir string, cmd snippetArgv) {
	cfg := nodetest.Config(t)
	cfg.Auth.JWTSecret = snippetJWTSecret
	cfg.Auth.APIKeys = []string{snippetAPIKey}
	n := nodetest.Start(t, cfg)
	user := "user-" + lang + "-ü" // not ASCII: the snippets must send UTF-8 JSON
	env := []string{
		"WSMESH_URL=http://" + n.Addr(),
		"WSMESH_API_KEY=" + snippetAPIKey,
		"WSMESH_JWT_SECRET=" + snippetJWTSecret,
		"USER_ID=" + user,
	}
	run := func(args ...string) snippetRun { return runSnippet(t, dir, cmd.argv, env, args...) }

	// mint: one line, a token the node's own check accepts.
	mint := run("mint")
	if mint.err != nil {
		t.Fatalf("mint: %v\nstderr: %s", mint.err, mint.stderr)
	}
	t.Logf("mint: %s", mint.took.Round(time.Millisecond))
	token := strings.TrimSpace(mint.stdout)
	if strings.ContainsAny(token, " \n") {
		t.Fatalf("mint printed more than a token:\n%s", mint.stdout)
	}
	checkSnippetToken(t, token, user)

	// The node takes it: the welcome frame comes, for that user.
	c := n.Dial(t, token, testsupport.DialOpts{})
	w := c.Welcome(t)
	if w["user"] != user || w["device"] != "web" {
		t.Fatalf("welcome %v: want user %q, device web", w, user)
	}
	sess := c.Session(t)

	// send: the answer says delivered 1, to that session, and the client
	// gets the message it names.
	send := run("send")
	if send.err != nil {
		t.Fatalf("send: %v\nstdout: %s\nstderr: %s", send.err, send.stdout, send.stderr)
	}
	t.Logf("send: %s: %s", send.took.Round(time.Millisecond), strings.TrimSpace(send.stdout))
	var answer struct {
		ID        string `json:"id"`
		Delivered int    `json:"delivered"`
		Results   []struct {
			User, Session, Status string
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(send.stdout)), &answer); err != nil {
		t.Fatalf("send printed %q: not the answer's JSON: %v", send.stdout, err)
	}
	if answer.Delivered != 1 || len(answer.Results) != 1 || answer.Results[0].Session != sess || answer.Results[0].User != user {
		t.Fatalf("send answer %s: want delivered 1, to user %q session %s", send.stdout, user, sess)
	}
	f := c.Next(t)
	want := map[string]any{"text": "hello from " + lang}
	if f["type"] != "message" || f["id"] != answer.ID || !reflect.DeepEqual(f["data"], want) {
		t.Fatalf("client got %v: want message %s with data %v", f, answer.ID, want)
	}

	// verify, against bodies signed as upstream signs them. The cases run
	// at once: each is a process (a JVM, for Java).
	verifyArgv := cmd.argv
	if cmd.verify != nil {
		verifyArgv = cmd.verify
	}
	body := []byte(`{"events":[{"id":"01a2062b-1f19-7000-b891-1edb6a36ddbf","type":"message","time":"2026-11-29T11:05:00.123Z",` +
		`"node":"n1","user":"42","device":"web","session":"hV3tcp0qTRm5X3Ho","client_id":"c1","data":{"text":"héllo ✓ \u003c"}}]}`)
	tmp := t.TempDir()
	writeBody := func(name string, b []byte) string {
		p, err := filepath.Abs(filepath.Join(tmp, name))
		if err == nil {
			err = os.WriteFile(p, b, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	bodyFile := writeBody("body.json", body)
	tampered := bytes.Replace(body, []byte(`"user":"42"`), []byte(`"user":"43"`), 1)
	tamperedFile := writeBody("tampered.json", tampered)
	now := time.Now()
	ts := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	sign := func(secret, ts string) string { return upstream.Sign([]byte(secret), ts, body) }
	decoded, err := base64.StdEncoding.DecodeString(snippetUpstreamSecret)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name          string
		ts, sig, file string
		valid         bool
	}{
		{name: "valid", ts: ts(0), sig: sign(snippetUpstreamSecret, ts(0)), file: bodyFile, valid: true},
		{name: "valid 4m old", ts: ts(-4 * time.Minute), sig: sign(snippetUpstreamSecret, ts(-4*time.Minute)), file: bodyFile, valid: true},
		{name: "tampered body", ts: ts(0), sig: sign(snippetUpstreamSecret, ts(0)), file: tamperedFile},
		{name: "wrong secret", ts: ts(0), sig: sign("another-upstream-secret-of-32-bytes-or-more", ts(0)), file: bodyFile},
		{name: "secret base64-decoded", ts: ts(0), sig: sign(string(decoded), ts(0)), file: bodyFile},
		{name: "stale timestamp", ts: ts(-6 * time.Minute), sig: sign(snippetUpstreamSecret, ts(-6*time.Minute)), file: bodyFile},
		{name: "future timestamp", ts: ts(6 * time.Minute), sig: sign(snippetUpstreamSecret, ts(6*time.Minute)), file: bodyFile},
		{name: "timestamp not the signed one", ts: ts(-1 * time.Second), sig: sign(snippetUpstreamSecret, ts(0)), file: bodyFile},
	}
	results := make([]snippetRun, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runSnippet(t, dir, verifyArgv, env, "verify", snippetUpstreamSecret, tc.ts, tc.sig, tc.file)
		}()
	}
	wg.Wait()
	for i, tc := range cases {
		r := results[i]
		var exit *exec.ExitError
		switch {
		case tc.valid && (r.err != nil || strings.TrimSpace(r.stdout) != "valid"):
			t.Errorf("verify %s: %v, stdout %q, want exit 0 and \"valid\"\nstderr: %s", tc.name, r.err, r.stdout, r.stderr)
		case !tc.valid && (!errors.As(r.err, &exit) || exit.ExitCode() != 1 || !strings.Contains(r.stderr, "invalid")):
			t.Errorf("verify %s: %v, stderr %q, want exit 1 and \"invalid\" on stderr\nstdout: %s", tc.name, r.err, r.stderr, r.stdout)
		default:
			t.Logf("verify %s: %s (%s)", tc.name, orNone(strings.TrimSpace(r.stdout+r.stderr)), r.took.Round(time.Millisecond))
		}
	}
}

// checkSnippetToken checks token as the node will (session.Authenticator)
// and that it holds the claims the snippets promise: sub, device, iat, exp
// an hour or less away, HS256.
func checkSnippetToken(t *testing.T, token, user string) {
	t.Helper()
	a, err := session.NewAuthenticator([]byte(snippetJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Verify(token)
	if err != nil {
		t.Fatalf("minted token %q refused: %v", token, err)
	}
	if id.User != user || id.Device != "web" {
		t.Fatalf("minted token is for %q device %q, want %q device web", id.User, id.Device, user)
	}
	claims := jwt.MapClaims{}
	tok, _, err := jwt.NewParser().ParseUnverified(token, claims)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Header["alg"] != "HS256" {
		t.Errorf("token alg %v, want HS256", tok.Header["alg"])
	}
	iat, err1 := claims.GetIssuedAt()
	exp, err2 := claims.GetExpirationTime()
	if err1 != nil || err2 != nil || iat == nil || exp == nil {
		t.Fatalf("token claims %v: want numeric iat and exp", claims)
	}
	if d := time.Since(iat.Time); d < -time.Minute || d > time.Minute {
		t.Errorf("token iat %s is not now", iat.Time)
	}
	if ttl := exp.Sub(iat.Time); ttl <= 0 || ttl > time.Hour {
		t.Errorf("token lives %s (iat %s, exp %s), want up to an hour", ttl, iat.Time, exp.Time)
	}
}

// snippetRun is what one run of a snippet did.
type snippetRun struct {
	stdout, stderr string
	err            error // from Wait: an *exec.ExitError for a non-zero exit
	took           time.Duration
}

// runSnippet runs argv plus args in dir with env added and waits for it,
// killing it after snippetRunLimit (which fails the test). Safe to call
// from several goroutines.
func runSnippet(t *testing.T, dir string, argv, env []string, args ...string) snippetRun {
	ctx, cancel := context.WithTimeout(context.Background(), snippetRunLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:len(argv):len(argv)], args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second // output pipes held open by a grandchild
	// Should the test binary die, the snippet goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err := cmd.Run()
	r := snippetRun{stdout: stdout.String(), stderr: stderr.String(), err: err, took: time.Since(start)}
	if ctx.Err() != nil {
		t.Errorf("%s %s: killed after %s\nstdout: %s\nstderr: %s", strings.Join(argv, " "), strings.Join(args, " "), snippetRunLimit, r.stdout, r.stderr)
	}
	return r
}
