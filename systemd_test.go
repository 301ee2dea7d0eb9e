package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"wsmesh/config"
	"wsmesh/internal/testsupport"
)

const (
	unitFile          = "deploy/wsmesh.service"
	exampleConfigFile = "deploy/config.example.toml"
	unitExecStart     = "ExecStart=/usr/local/bin/wsmesh " // the installed binary's path in the unit
)

// unitDirective is one Key=Value assignment of a unit file.
type unitDirective struct {
	section, key, value string
	line                int
}

// parseUnit reads a unit file's assignments in order, skipping comments and
// blank lines. Continuation lines (a trailing backslash) are not supported:
// the unit does not use them, and the test fails if it starts to.
func parseUnit(t *testing.T, text string) []unitDirective {
	t.Helper()
	var out []unitDirective
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
			continue
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: continuation lines are not supported by this test", unitFile, i+1)
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: not a Key=Value line: %q", unitFile, i+1, line)
		}
		out = append(out, unitDirective{section, strings.TrimSpace(k), strings.TrimSpace(v), i + 1})
	}
	return out
}

// lastValue returns the value of the last assignment of key in section
// (the one systemd uses for a single-valued setting).
func lastValue(ds []unitDirective, section, key string) (string, bool) {
	val, found := "", false
	for _, d := range ds {
		if d.section == section && d.key == key {
			val, found = d.value, true
		}
	}
	return val, found
}

// TestSystemdUnitVerifies checks deploy/wsmesh.service: the directives it
// must hold (readiness, limits, restart policy, hardening), that it stops
// slower than the node's graceful shutdown, and that `systemd-analyze
// verify` accepts it without a single warning about it.
func TestSystemdUnitVerifies(t *testing.T) {
	raw, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	ds := parseUnit(t, text)

	t.Run("directives", func(t *testing.T) {
		const svc, unit, install = "[Service]", "[Unit]", "[Install]"
		want := []struct{ section, key, value string }{
			{svc, "Type", "notify"},
			{svc, "NotifyAccess", "main"},
			{svc, "ExecStart", "/usr/local/bin/wsmesh serve -config /etc/wsmesh/config.toml"},
			{svc, "User", "wsmesh"},
			{svc, "Group", "wsmesh"},
			{svc, "Restart", "on-failure"},
			{svc, "KillSignal", "SIGTERM"},
			{svc, "LimitNOFILE", "1048576"},
			{svc, "ConfigurationDirectory", "wsmesh"},
			{svc, "NoNewPrivileges", "yes"},
			{svc, "ProtectSystem", "strict"},
			{svc, "ProtectHome", "yes"},
			{svc, "PrivateTmp", "yes"},
			{svc, "PrivateDevices", "yes"},
			{svc, "ProtectKernelTunables", "yes"},
			{svc, "ProtectKernelModules", "yes"},
			{svc, "ProtectKernelLogs", "yes"},
			{svc, "ProtectControlGroups", "yes"},
			{svc, "ProtectClock", "yes"},
			{svc, "ProtectHostname", "yes"},
			{svc, "RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
			{svc, "RestrictNamespaces", "yes"},
			{svc, "RestrictRealtime", "yes"},
			{svc, "RestrictSUIDSGID", "yes"},
			{svc, "LockPersonality", "yes"},
			{svc, "MemoryDenyWriteExecute", "yes"},
			{svc, "SystemCallArchitectures", "native"},
			{svc, "CapabilityBoundingSet", ""}, // empty: no capability at all
			{install, "WantedBy", "multi-user.target"},
		}
		for _, w := range want {
			t.Run(w.key, func(t *testing.T) {
				got, ok := lastValue(ds, w.section, w.key)
				if !ok {
					t.Fatalf("%s has no %s=%s in %s", unitFile, w.key, w.value, w.section)
				}
				if got != w.value {
					t.Fatalf("%s: %s %s=%q, want %q", unitFile, w.section, w.key, got, w.value)
				}
			})
		}
		// Set, any value.
		for _, w := range []struct{ section, key string }{
			{svc, "RestartSec"}, {unit, "StartLimitIntervalSec"}, {unit, "StartLimitBurst"},
		} {
			t.Run(w.key, func(t *testing.T) {
				if _, ok := lastValue(ds, w.section, w.key); !ok {
					t.Fatalf("%s has no %s= in %s", unitFile, w.key, w.section)
				}
			})
		}
		// SystemCallFilter accumulates; the allow-list must be among its values.
		t.Run("SystemCallFilter", func(t *testing.T) {
			var filters []string
			for _, d := range ds {
				if d.section == svc && d.key == "SystemCallFilter" {
					filters = append(filters, d.value)
				}
			}
			if !slices.Contains(filters, "@system-service") {
				t.Fatalf("%s: SystemCallFilter= %q, want one to be @system-service", unitFile, filters)
			}
		})
		// systemd SIGKILLs the node TimeoutStopSec after SIGTERM: that must
		// leave room for node.shutdown_timeout, the default's and the example's.
		t.Run("TimeoutStopSec", func(t *testing.T) {
			v, ok := lastValue(ds, svc, "TimeoutStopSec")
			if !ok {
				t.Fatalf("%s has no TimeoutStopSec=", unitFile)
			}
			stop, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("%s: TimeoutStopSec=%s: write it as a Go-style duration such as 20s (%v)", unitFile, v, err)
			}
			ex, err := os.ReadFile(exampleConfigFile)
			if err != nil {
				t.Fatal(err)
			}
			var exCfg struct {
				Node struct {
					ShutdownTimeout config.Duration `toml:"shutdown_timeout"`
				} `toml:"node"`
			}
			if _, err := toml.Decode(string(ex), &exCfg); err != nil {
				t.Fatalf("%s: %v", exampleConfigFile, err)
			}
			for name, d := range map[string]time.Duration{
				"default node.shutdown_timeout":              config.Default().Node.ShutdownTimeout.D(),
				exampleConfigFile + " node.shutdown_timeout": exCfg.Node.ShutdownTimeout.D(),
			} {
				if stop <= d {
					t.Errorf("TimeoutStopSec=%s is not above the %s (%s)", v, name, d)
				}
			}
		})
	})

	t.Run("systemd-analyze verify", func(t *testing.T) {
		analyze := testsupport.RequireTool(t, "systemd-analyze", "systemd")
		bin := buildBinary(t)
		// verify checks that ExecStart's program exists and is executable:
		// point it at the freshly built binary. No other path in the unit has
		// to exist (EnvironmentFile= is optional with its "-"; systemd makes
		// ConfigurationDirectory= at start).
		if n := strings.Count(text, "\n"+unitExecStart); n != 1 {
			t.Fatalf("%s: %d lines start with %q, want 1", unitFile, n, unitExecStart)
		}
		unitText := strings.Replace(text, "\n"+unitExecStart, "\nExecStart="+bin+" ", 1)
		dir := t.TempDir()

		out, err := systemdVerify(t, analyze, dir, "wsmesh.service", unitText)
		t.Logf("systemd-analyze verify wsmesh.service (ExecStart=%s):\n%s", bin, orNone(out))
		if err != nil {
			t.Errorf("systemd-analyze verify: %v", err)
		}
		if bad := linesMentioning(out, "wsmesh.service"); len(bad) > 0 {
			t.Errorf("systemd-analyze verify has %d complaint(s) about the unit:\n%s", len(bad), strings.Join(bad, "\n"))
		}

		// A control: the same check must notice a misspelt directive, or
		// the check above proves nothing (say, if the output format moved).
		broken := strings.Replace(unitText, "\n[Service]\n", "\n[Service]\nProtectClok=yes\n", 1)
		if broken == unitText {
			t.Fatal("control: no [Service] section to add a misspelt directive to")
		}
		out, _ = systemdVerify(t, analyze, dir, "wsmesh-control.service", broken)
		if len(linesMentioning(out, "wsmesh-control.service")) == 0 {
			t.Fatalf("control: systemd-analyze verify did not report a misspelt directive, so its silence above means nothing:\n%s", orNone(out))
		}
	})
}

// systemdVerify writes a unit named name into dir and runs `systemd-analyze
// verify` on it, returning its combined output.
func systemdVerify(t *testing.T, analyze, dir, name, text string) (string, error) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testsupport.WaitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, analyze, "verify", path)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=cat", "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("systemd-analyze verify did not finish within %s:\n%s", testsupport.WaitLimit, out)
	}
	return string(out), err
}

func linesMentioning(out, s string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			lines = append(lines, l)
		}
	}
	return lines
}

func orNone(s string) string {
	if strings.TrimSpace(s) == "" {
		return "(no output)"
	}
	return s
}

// TestSystemdReadinessNotify runs the built binary as systemd would with
// Type=notify: NOTIFY_SOCKET names a unix datagram socket this test reads.
// READY=1 must come first, and when it arrives GET /healthz and GET
// /readyz must already answer 200 (ready means serving and ready for
// traffic, so `systemctl start` returning and units ordered
// After=wsmesh.service can rely on it). On SIGTERM, STOPPING=1 must
// arrive, then the process must exit with status 0. (The abstract socket
// form, NOTIFY_SOCKET=@name, is not covered here.)
func TestSystemdReadinessNotify(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	if len(sock) >= 108 { // sun_path is 108 bytes, NUL included
		short, err := os.MkdirTemp("", "sdn")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(short) })
		sock = filepath.Join(short, "notify.sock")
	}
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan string, 64)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 4096)
		for {
			n, err := l.Read(buf)
			if err != nil {
				return // closed by the cleanup
			}
			select {
			case msgs <- string(buf[:n]):
			default: // nobody is reading any more
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-readerDone
	})

	httpAddr := fmt.Sprintf("127.0.0.1:%d", testsupport.FreePort(t))
	cfgPath := filepath.Join(dir, "wsmesh.toml")
	cfg := fmt.Sprintf(`[node]
name = "sd1"
shutdown_timeout = "5s"
[http]
listen = %q
[cluster]
bind = "127.0.0.1:%d"
[auth]
jwt_secret = %q
api_keys = [%q]
[log]
format = "json"
`, httpAddr, testsupport.FreePort(t), testsupport.Secret, testsupport.APIKey)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "sd1.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own copy

	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, config.EnvPrefix) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+sock)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	exited := make(chan struct{})
	go func() {
		exitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	logOf := func() string {
		b, _ := os.ReadFile(logPath)
		return "node log:\n" + string(b)
	}

	// await returns the next notification, failing the test if the process
	// exits first or nothing comes within testsupport.WaitLimit.
	await := func(what string) string {
		t.Helper()
		timer := time.NewTimer(testsupport.WaitLimit)
		defer timer.Stop()
		select {
		case m := <-msgs:
			return m
		case <-exited:
			// A datagram sent just before exiting may still be on its way to msgs.
			select {
			case m := <-msgs:
				return m
			case <-time.After(time.Second):
			}
			t.Fatalf("process exited (%v) before sending %s\n%s", exitErr, what, logOf())
		case <-timer.C:
			t.Fatalf("no %s on NOTIFY_SOCKET within %s\n%s", what, testsupport.WaitLimit, logOf())
		}
		return ""
	}

	start := time.Now()
	m := await(sdReady)
	if !hasNotifyLine(m, sdReady) {
		t.Fatalf("first notification is %q, want %s\n%s", m, sdReady, logOf())
	}
	readyAfter := time.Since(start)
	// One attempt, no retry: the node said it is ready, so it must serve.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + httpAddr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz right after %s: %v\n%s", sdReady, err, logOf())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz right after %s: %d %s", sdReady, resp.StatusCode, body)
	}
	t.Logf("%s %s after start; GET /healthz then: %d %s", sdReady, readyAfter.Round(time.Millisecond), resp.StatusCode, bytes.TrimSpace(body))
	// A node alone by config is ready at once: READY=1 waits for /readyz.
	resp, err = client.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz right after %s: %v\n%s", sdReady, err, logOf())
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(bytes.TrimSpace(body)) != `{"status":"ready"}` {
		t.Fatalf("GET /readyz right after %s: %d %s", sdReady, resp.StatusCode, body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	if m := await(sdStopping); !hasNotifyLine(m, sdStopping) {
		t.Fatalf("after SIGTERM the next notification is %q, want %s\n%s", m, sdStopping, logOf())
	}
	stoppingAfter := time.Since(termAt)
	select {
	case <-exited:
	case <-time.After(testsupport.WaitLimit):
		t.Fatalf("process did not exit within %s of SIGTERM\n%s", testsupport.WaitLimit, logOf())
	}
	if exitErr != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0 (systemd would count it a failure)\n%s", exitErr, logOf())
	}
	t.Logf("%s %s after SIGTERM; exit status 0 after %s", sdStopping, stoppingAfter.Round(time.Millisecond), time.Since(termAt).Round(time.Millisecond))
}

const (
	sdReady    = "READY=1"
	sdStopping = "STOPPING=1"
)

// hasNotifyLine reports whether an sd_notify datagram (newline-separated
// assignments) holds the assignment want.
func hasNotifyLine(msg, want string) bool {
	return slices.Contains(strings.Split(strings.TrimSpace(msg), "\n"), want)
}

// TestExampleConfigRefusesPlaceholders documents that deploy/config.example.toml
// cannot be run by mistake: each of its three secrets is a placeholder the
// node refuses, and the error names the key and the file. With real values
// given through WSMESH_ variables (as an operator might, from
// /etc/wsmesh/wsmesh.env) it loads, and is a production config.
func TestExampleConfigRefusesPlaceholders(t *testing.T) {
	realValues := []struct{ env, key, value string }{
		{"WSMESH_CLUSTER_SECRET_KEYS", "cluster.secret_keys", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))},
		{"WSMESH_AUTH_JWT_SECRET", "auth.jwt_secret", testsupport.Secret},
		{"WSMESH_AUTH_API_KEYS", "auth.api_keys", "backend-key-one,backend-key-two"},
		{"WSMESH_UPSTREAM_SECRET", "upstream.secret", "an-upstream-secret-of-32-bytes-or-more"},
	}
	fromFile := "file " + exampleConfigFile

	t.Run("as it is", func(t *testing.T) {
		_, err := config.Load(exampleConfigFile, nil)
		if err == nil {
			t.Fatalf("%s loads as it is: it must not, its secrets are published placeholders", exampleConfigFile)
		}
		t.Logf("refused: %v", err)
		for _, r := range realValues { // all of them in one run, not one per run
			if !strings.Contains(err.Error(), r.key+" ("+fromFile+")") {
				t.Fatalf("error %q does not name the placeholder %s and %s", err, r.key, fromFile)
			}
		}
	})

	// Even with both listeners moved to loopback (where weak auth secrets
	// are allowed), the placeholders are refused as placeholders.
	t.Run("on loopback", func(t *testing.T) {
		_, err := config.Load(exampleConfigFile, []string{"WSMESH_HTTP_LISTEN=127.0.0.1:8080", "WSMESH_CLUSTER_BIND=127.0.0.1:7946"})
		if err == nil || !strings.Contains(err.Error(), "placeholder") || !strings.Contains(err.Error(), "("+fromFile+")") {
			t.Fatalf("on loopback: %v, want a placeholder refused", err)
		}
		t.Logf("refused: %v", err)
	})

	// Each placeholder on its own: the others replaced.
	for i, left := range realValues {
		t.Run("only "+left.key+" left", func(t *testing.T) {
			var env []string
			for j, r := range realValues {
				if j != i {
					env = append(env, r.env+"="+r.value)
				}
			}
			_, err := config.Load(exampleConfigFile, env)
			if err == nil {
				t.Fatalf("%s loads with its %s placeholder: it must be refused", exampleConfigFile, left.key)
			}
			t.Logf("refused: %v", err)
			if want := left.key + " (" + fromFile + ")"; !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %s", err, want)
			}
		})
	}

	t.Run("all replaced", func(t *testing.T) {
		var env []string
		for _, r := range realValues {
			env = append(env, r.env+"="+r.value)
		}
		cfg, err := config.Load(exampleConfigFile, env)
		if err != nil {
			t.Fatalf("%s with real secrets: %v", exampleConfigFile, err)
		}
		checks := []struct {
			name      string
			got, want any
		}{
			{"source", cfg.Source, exampleConfigFile},
			{"generated jwt_secret", cfg.GeneratedSecret, false},
			{"cluster.secret_keys", cfg.Cluster.SecretKeys, []string{realValues[0].value}},
			{"auth.jwt_secret", cfg.Auth.JWTSecret, testsupport.Secret},
			{"auth.api_keys", cfg.Auth.APIKeys, strings.Split(realValues[2].value, ",")},
			{"http.listen", cfg.HTTP.Listen, "0.0.0.0:8080"},
			{"cluster.bind", cfg.Cluster.Bind, "0.0.0.0:7946"},
			{"cluster.advertise among the seeds", slices.Contains(cfg.Cluster.Seeds, cfg.Cluster.Advertise), true},
			{"three seeds", len(cfg.Cluster.Seeds), 3},
			{"trusted proxies set", len(cfg.HTTP.TrustedProxies) > 0, true},
			{"demo page served", cfg.HTTP.DemoEnabled(), false},
			{"log.format", cfg.Log.Format, "json"},
			{"upstream.secret", cfg.Upstream.Secret, realValues[3].value},
		}
		for _, c := range checks {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
			}
		}
		if cfg.Cluster.Advertise == "" || config.IsLoopback(cfg.Cluster.Advertise) {
			t.Errorf("cluster.advertise %q: want the VM's address", cfg.Cluster.Advertise)
		}
	})
}

// TestExampleConfigHasEveryKey checks that deploy/config.example.toml sets
// every key of config.toml and of config.Config, each with a comment: on
// the line above, or at the end of its own line.
func TestExampleConfigHasEveryKey(t *testing.T) {
	want := map[string]string{} // key -> where it is from
	var md toml.MetaData
	var err error
	if md, err = toml.DecodeFile("config.toml", &map[string]any{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range md.Keys() {
		if len(k) == 2 {
			want[k.String()] = "config.toml"
		}
	}
	for _, k := range configKeys(reflect.TypeFor[config.Config](), "") {
		if _, ok := want[k]; !ok {
			want[k] = "config.Config"
		}
	}

	raw, err := os.ReadFile(exampleConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	keyLine := regexp.MustCompile(`^([A-Za-z0-9_]+)\s*=`)
	tableLine := regexp.MustCompile(`^\[([A-Za-z0-9_]+)\]\s*(#.*)?$`)
	table, prev := "", ""
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if m := tableLine.FindStringSubmatch(line); m != nil {
			table = m[1]
		} else if m := keyLine.FindStringSubmatch(line); m != nil {
			key := table + "." + m[1]
			got[key] = true
			if !strings.HasPrefix(prev, "#") && !strings.Contains(line, " #") {
				t.Errorf("%s:%d: %s has no comment (on the line above or at the end of the line)", exampleConfigFile, n, key)
			}
		}
		prev = line
	}
	for k, from := range want {
		if !got[k] {
			t.Errorf("%s does not set %s (a key of %s)", exampleConfigFile, k, from)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s sets %s, which is not a config key", exampleConfigFile, k)
		}
	}
}

// configKeys lists "table.key" for the toml-tagged fields of a config struct.
func configKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		if f.Type.Kind() == reflect.Struct && prefix == "" {
			keys = append(keys, configKeys(f.Type, tag+".")...)
			continue
		}
		keys = append(keys, prefix+tag)
	}
	return keys
}
