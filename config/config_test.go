package config

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// strongSecret is 40 bytes: long enough for a non-loopback listener.
const strongSecret = "0123456789abcdefghijklmnopqrstuvwxyzABCD"

// writeConfig writes content to a config.toml in a fresh temp dir and
// returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantErrContains fails unless err is non-nil and its text holds every want.
func wantErrContains(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", want)
	}
	t.Logf("error: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Chdir(t.TempDir()) // no ./config.toml here

	c1, err := Load("", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	c2, err := Load("", nil)
	if err != nil {
		t.Fatalf("second Load: %v", err)
	}

	host, herr := os.Hostname()
	if herr != nil || host == "" {
		host = "wsmesh"
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Source", c1.Source, DefaultSource},
		{"GeneratedSecret", c1.GeneratedSecret, true},
		{"node.name", c1.Node.Name, host},
		{"node.shutdown_timeout", c1.Node.ShutdownTimeout.D(), 10 * time.Second},
		{"http.listen", c1.HTTP.Listen, "127.0.0.1:8080"},
		{"http.max_body_bytes", c1.HTTP.MaxBodyBytes, int64(1 << 20)},
		{"http.max_users_per_send", c1.HTTP.MaxUsersPerSend, 1000},
		{"cluster.bind", c1.Cluster.Bind, "127.0.0.1:7946"},
		{"cluster.advertise", c1.Cluster.Advertise, ""},
		{"cluster.seeds", len(c1.Cluster.Seeds), 0},
		{"cluster.secret_keys", len(c1.Cluster.SecretKeys), 0},
		{"auth.api_keys", len(c1.Auth.APIKeys), 0},
		{"auth.allowed_origins", len(c1.Auth.AllowedOrigins), 0},
		{"session.ping_interval", c1.Session.PingInterval.D(), 25 * time.Second},
		{"session.idle_timeout", c1.Session.IdleTimeout.D(), 60 * time.Second},
		{"session.write_timeout", c1.Session.WriteTimeout.D(), 10 * time.Second},
		{"session.send_queue", c1.Session.SendQueue, 256},
		{"session.max_message_bytes", c1.Session.MaxMessageBytes, 65536},
		{"session.single_device", c1.Session.SingleDevice, false},
		{"rooms.max_per_session", c1.Rooms.MaxPerSession, 100},
		{"log.level", c1.Log.Level, "info"},
		{"log.format", c1.Log.Format, "auto"},
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			if !reflect.DeepEqual(ch.got, ch.want) {
				t.Errorf("got %v, want %v", ch.got, ch.want)
			}
		})
	}

	t.Run("generated secret", func(t *testing.T) {
		if c1.Auth.JWTSecret == "" {
			t.Fatal("jwt_secret is empty")
		}
		if len(c1.Auth.JWTSecret) < MinSecretBytes {
			t.Errorf("generated jwt_secret is %d bytes, want >= %d", len(c1.Auth.JWTSecret), MinSecretBytes)
		}
		if c1.Auth.JWTSecret == c2.Auth.JWTSecret {
			t.Errorf("two loads generated the same secret %q", c1.Auth.JWTSecret)
		}
		if !c2.GeneratedSecret {
			t.Error("second load: GeneratedSecret false")
		}
	})
}

func TestLoadPicksUpConfigInWorkingDir(t *testing.T) {
	dir := t.TempDir()
	content := "[node]\nname = \"from-cwd\"\n"
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	c, err := Load("", nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Node.Name != "from-cwd" {
		t.Errorf("node.name = %q, want %q", c.Node.Name, "from-cwd")
	}
	if c.Source != "config.toml" {
		t.Errorf("Source = %q, want %q", c.Source, "config.toml")
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // besides the file path
	}{
		{"unknown key", "[session]\nsend_qeue = 5\n", []string{"session.send_qeue"}},
		{"unknown section", "[sesion]\nsend_queue = 5\n", []string{"sesion"}},
		{"wrong type", "[session]\nsend_queue = \"x\"\n", []string{"session.send_queue"}},
		{"wrong type bool", "[session]\nsingle_device = 1\n", []string{"session.single_device"}},
		{"bad duration", "[session]\nping_interval = \"soon\"\n", []string{"session.ping_interval", "soon"}},
		{"zero duration", "[session]\nwrite_timeout = \"0s\"\n", []string{"session.write_timeout", "positive"}},
		{"negative shutdown", "[node]\nshutdown_timeout = \"-1s\"\n", []string{"node.shutdown_timeout", "positive"}},
		{"negative send_queue", "[session]\nsend_queue = -1\n", []string{"session.send_queue", "-1"}},
		{"zero send_queue", "[session]\nsend_queue = 0\n", []string{"session.send_queue"}},
		{"negative max_connections", "[session]\nmax_connections = -1\n", []string{"session.max_connections", "-1"}},
		{"zero read_timeout", "[http]\nread_timeout = \"0s\"\n", []string{"http.read_timeout", "positive"}},
		{"negative max_body_bytes", "[http]\nmax_body_bytes = -5\n", []string{"http.max_body_bytes", "-5"}},
		{"zero max_users_per_send", "[http]\nmax_users_per_send = 0\n", []string{"http.max_users_per_send"}},
		{"small max_message_bytes", "[session]\nmax_message_bytes = 63\n", []string{"session.max_message_bytes", "63"}},
		{"zero rooms max_per_session", "[rooms]\nmax_per_session = 0\n", []string{"rooms.max_per_session", "at least 1", "0"}},
		{"bad listen", "[http]\nlisten = \"nope\"\n", []string{"http.listen", "nope"}},
		{"bad listen port", "[http]\nlisten = \"127.0.0.1:70000\"\n", []string{"http.listen", "70000"}},
		{"bad bind", "[cluster]\nbind = \"nope\"\n", []string{"cluster.bind"}},
		{"bad advertise", "[cluster]\nadvertise = \"a b:1\"\n", []string{"cluster.advertise"}},
		{"bad seed", "[cluster]\nseeds = [\"a:1\", \"nope\"]\n", []string{"cluster.seeds", "nope"}},
		{"idle equals ping", "[session]\nping_interval = \"30s\"\nidle_timeout = \"30s\"\n", []string{"session.idle_timeout", "session.ping_interval"}},
		{"idle below ping", "[session]\nping_interval = \"30s\"\nidle_timeout = \"10s\"\n", []string{"session.idle_timeout"}},
		{"ping above default idle", "[session]\nping_interval = \"2m\"\n", []string{"session.idle_timeout"}},
		{"bad log level", "[log]\nlevel = \"verbose\"\n", []string{"log.level", "verbose"}},
		{"bad log format", "[log]\nformat = \"xml\"\n", []string{"log.format", "xml"}},
		{"empty node name", "[node]\nname = \"  \"\n", []string{"node.name"}},
		{"empty api key", "[auth]\napi_keys = [\"\"]\n", []string{"auth.api_keys"}},
		{"syntax error", "[session\nsend_queue = 1\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			c, err := Load(path, nil)
			wantErrContains(t, err, append([]string{path}, tt.want...)...)
			if c != nil {
				t.Errorf("got a config %+v along with the error", c)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "wsmesh.toml")
	_, err := Load(path, nil)
	wantErrContains(t, err, path, "not found")
}

func TestLoadSecretKeys(t *testing.T) {
	key := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	tests := []struct {
		name string
		keys string // TOML array body
		ok   bool
		want []string
	}{
		{"bad base64", `"!!!not-base64!!!"`, false, []string{"base64"}},
		{"10-byte key", `"` + key(10) + `"`, false, []string{"10 bytes"}},
		{"second key bad", `"` + key(32) + `", "` + key(10) + `"`, false, []string{"key 2"}},
		{"32-byte key", `"` + key(32) + `"`, true, nil},
		{"16 and 24-byte keys", `"` + key(16) + `", "` + key(24) + `"`, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, "[cluster]\nsecret_keys = ["+tt.keys+"]\n")
			c, err := Load(path, nil)
			if tt.ok {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if len(c.Cluster.SecretKeys) == 0 {
					t.Error("secret_keys not loaded")
				}
				return
			}
			wantErrContains(t, err, append([]string{"cluster.secret_keys", path}, tt.want...)...)
		})
	}
}

const envBaseFile = `[cluster]
seeds = ["x:1"]

[session]
send_queue = 3
ping_interval = "10s"
single_device = false
`

func TestLoadEnvOverride(t *testing.T) {
	path := writeConfig(t, envBaseFile)
	env := []string{
		"PATH=/usr/bin",
		"WSMESH=ignored",  // no "WSMESH_" prefix
		"WSMESHX_A=other", // no "WSMESH_" prefix
		"WSMESH_SESSION_SEND_QUEUE=7",
		"WSMESH_CLUSTER_SEEDS=a:1, b:2",
		"WSMESH_SESSION_PING_INTERVAL=5s",
		"WSMESH_SESSION_SINGLE_DEVICE=true",
		"WSMESH_ROOMS_MAX_PER_SESSION=3",
		"WSMESH_AUTH_JWT_SECRET=a=b=c", // value may hold '='
	}
	c, err := Load(path, env)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"send_queue", c.Session.SendQueue, 7},
		{"seeds", c.Cluster.Seeds, []string{"a:1", "b:2"}},
		{"ping_interval", c.Session.PingInterval.D(), 5 * time.Second},
		{"single_device", c.Session.SingleDevice, true},
		{"rooms.max_per_session", c.Rooms.MaxPerSession, 3},
		{"jwt_secret", c.Auth.JWTSecret, "a=b=c"},
		{"generated", c.GeneratedSecret, false},
		{"source", c.Source, path},
		{"idle_timeout untouched", c.Session.IdleTimeout.D(), 60 * time.Second},
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			if !reflect.DeepEqual(ch.got, ch.want) {
				t.Errorf("got %#v, want %#v", ch.got, ch.want)
			}
		})
	}
}

func TestLoadEnvWithoutFile(t *testing.T) {
	t.Chdir(t.TempDir())
	c, err := Load("", []string{"WSMESH_HTTP_MAX_BODY_BYTES=2048", "WSMESH_LOG_LEVEL=debug", "WSMESH_CLUSTER_SEEDS= , ,"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.HTTP.MaxBodyBytes != 2048 {
		t.Errorf("max_body_bytes = %d, want 2048", c.HTTP.MaxBodyBytes)
	}
	if c.Log.Level != "debug" {
		t.Errorf("log.level = %q, want debug", c.Log.Level)
	}
	if len(c.Cluster.Seeds) != 0 {
		t.Errorf("seeds = %q, want none", c.Cluster.Seeds)
	}
}

func TestLoadEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		env  string
		want []string
	}{
		{"bad integer", "WSMESH_SESSION_SEND_QUEUE=abc", []string{"WSMESH_SESSION_SEND_QUEUE", "session.send_queue", "abc"}},
		{"bad bool", "WSMESH_SESSION_SINGLE_DEVICE=maybe", []string{"WSMESH_SESSION_SINGLE_DEVICE", "session.single_device"}},
		{"bad duration", "WSMESH_SESSION_PING_INTERVAL=soon", []string{"WSMESH_SESSION_PING_INTERVAL", "session.ping_interval"}},
		{"unknown variable", "WSMESH_FOO_BAR=1", []string{"WSMESH_FOO_BAR"}},
		{"unknown key in known section", "WSMESH_SESSION_SEND_QEUE=1", []string{"WSMESH_SESSION_SEND_QEUE"}},
		{"validation negative", "WSMESH_SESSION_SEND_QUEUE=-3", []string{"WSMESH_SESSION_SEND_QUEUE", "session.send_queue", "-3"}},
		{"validation address", "WSMESH_HTTP_LISTEN=nope", []string{"WSMESH_HTTP_LISTEN", "http.listen"}},
		{"validation seed", "WSMESH_CLUSTER_SEEDS=a:1,nope", []string{"WSMESH_CLUSTER_SEEDS", "cluster.seeds"}},
		{"validation idle", "WSMESH_SESSION_IDLE_TIMEOUT=10s", []string{"WSMESH_SESSION_IDLE_TIMEOUT", "session.idle_timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, envBaseFile)
			c, err := Load(path, []string{"HOME=/root", tt.env})
			wantErrContains(t, err, tt.want...)
			if c != nil {
				t.Errorf("got a config along with the error")
			}
		})
	}
}

// Load must not reorder the caller's env slice (it is usually os.Environ(),
// but a caller may share one slice between goroutines).
func TestLoadDoesNotReorderEnv(t *testing.T) {
	t.Chdir(t.TempDir())
	env := []string{"WSMESH_SESSION_SEND_QUEUE=7", "HOME=/root"}
	orig := append([]string(nil), env...)
	if _, err := Load("", env); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(env, orig) {
		t.Errorf("Load reordered its env argument: got %q, want %q", env, orig)
	}
}

func TestLoadExposure(t *testing.T) {
	exposed := []string{"0.0.0.0:8080", ":8080", "10.1.2.3:80", "[::]:8080"}
	refused := []struct {
		name   string
		auth   string
		key    string
		reason string
	}{
		{"sample secret", `jwt_secret = "` + SampleJWTSecret + `"` + "\napi_keys = [\"k-real\"]", "auth.jwt_secret", "sample"},
		{"empty secret", `jwt_secret = ""` + "\napi_keys = [\"k-real\"]", "auth.jwt_secret", "empty"},
		{"no secret", `api_keys = ["k-real"]`, "auth.jwt_secret", "empty"},
		{"10-byte secret", `jwt_secret = "0123456789"` + "\napi_keys = [\"k-real\"]", "auth.jwt_secret", "10 bytes"},
		{"31-byte secret", `jwt_secret = "` + strongSecret[:31] + `"` + "\napi_keys = [\"k-real\"]", "auth.jwt_secret", "31 bytes"},
		{"no api keys", `jwt_secret = "` + strongSecret + `"`, "auth.api_keys", "empty"},
		{"empty api keys", `jwt_secret = "` + strongSecret + `"` + "\napi_keys = []", "auth.api_keys", "empty"},
		{"sample api key", `jwt_secret = "` + strongSecret + `"` + "\napi_keys = [\"" + SampleAPIKey + "\"]", "auth.api_keys", "sample"},
		{"sample api key second", `jwt_secret = "` + strongSecret + `"` + "\napi_keys = [\"k-real\", \"" + SampleAPIKey + "\"]", "auth.api_keys", "sample"},
	}
	for _, listen := range exposed {
		for _, tt := range refused {
			t.Run(tt.name+"/"+listen, func(t *testing.T) {
				path := writeConfig(t, "[http]\nlisten = \""+listen+"\"\n\n[auth]\n"+tt.auth+"\n")
				_, err := Load(path, nil)
				wantErrContains(t, err, tt.key, path, tt.reason, `"`+listen+`"`, "not a loopback")
			})
		}
		t.Run("strong/"+listen, func(t *testing.T) {
			path := writeConfig(t, "[http]\nlisten = \""+listen+"\"\n\n[auth]\njwt_secret = \""+strongSecret+"\"\napi_keys = [\"k-real\"]\n")
			c, err := Load(path, nil)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.Auth.JWTSecret != strongSecret || c.GeneratedSecret {
				t.Errorf("jwt_secret = %q (generated %v), want the file's", c.Auth.JWTSecret, c.GeneratedSecret)
			}
		})
	}

	for _, listen := range []string{"127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1:0"} {
		t.Run("loopback sample/"+listen, func(t *testing.T) {
			path := writeConfig(t, "[http]\nlisten = \""+listen+"\"\n\n[auth]\njwt_secret = \""+SampleJWTSecret+"\"\napi_keys = [\""+SampleAPIKey+"\"]\n")
			c, err := Load(path, nil)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.HTTP.Listen != listen {
				t.Errorf("listen = %q, want %q", c.HTTP.Listen, listen)
			}
		})
		t.Run("loopback no secret/"+listen, func(t *testing.T) {
			path := writeConfig(t, "[http]\nlisten = \""+listen+"\"\n")
			c, err := Load(path, nil)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !c.GeneratedSecret || c.Auth.JWTSecret == "" {
				t.Errorf("want a generated secret, got %q (generated %v)", c.Auth.JWTSecret, c.GeneratedSecret)
			}
		})
	}

	t.Run("env moves sample config off loopback", func(t *testing.T) {
		_, err := Load("../config.toml", []string{"WSMESH_HTTP_LISTEN=0.0.0.0:8080"})
		wantErrContains(t, err, "auth.jwt_secret", "../config.toml", `"0.0.0.0:8080"`)
	})
	t.Run("env secret on exposed listener", func(t *testing.T) {
		_, err := Load("../config.toml", []string{"WSMESH_HTTP_LISTEN=0.0.0.0:8080", "WSMESH_AUTH_JWT_SECRET=short"})
		wantErrContains(t, err, "auth.jwt_secret", "WSMESH_AUTH_JWT_SECRET", "5 bytes")
	})
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:8080", true},
		{"127.9.9.9:1", true},
		{"localhost:8080", true},
		{"[::1]:8080", true},
		{":8080", false},
		{"0.0.0.0:8080", false},
		{"[::]:8080", false},
		{"10.1.2.3:80", false},
		{"example.com:80", false},
		{"nope", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := IsLoopback(tt.addr); got != tt.want {
				t.Errorf("IsLoopback(%q) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestLoadCommittedSample(t *testing.T) {
	c, err := Load("../config.toml", nil)
	if err != nil {
		t.Fatalf("Load(../config.toml): %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"source", c.Source, "../config.toml"},
		{"node.name", c.Node.Name, "n1"},
		{"http.listen", c.HTTP.Listen, "127.0.0.1:8080"},
		{"cluster.bind", c.Cluster.Bind, "127.0.0.1:7946"},
		{"auth.jwt_secret", c.Auth.JWTSecret, SampleJWTSecret},
		{"generated", c.GeneratedSecret, false},
		{"auth.api_keys", c.Auth.APIKeys, []string{SampleAPIKey}},
		{"session.send_queue", c.Session.SendQueue, 256},
		{"session.ping_interval", c.Session.PingInterval.D(), 25 * time.Second},
		{"session.max_connections", c.Session.MaxConnections, 0},
		{"rooms.max_per_session", c.Rooms.MaxPerSession, 100},
		{"http.read_timeout", c.HTTP.ReadTimeout.D(), 30 * time.Second},
		{"log.level", c.Log.Level, "info"},
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			if !reflect.DeepEqual(ch.got, ch.want) {
				t.Errorf("got %#v, want %#v", ch.got, ch.want)
			}
		})
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil {
		t.Fatal(err)
	}
	if d.D() != 90*time.Second {
		t.Errorf("D() = %s, want 1m30s", d.D())
	}
	b, err := d.MarshalText()
	if err != nil || string(b) != "1m30s" {
		t.Errorf("MarshalText = %q, %v; want \"1m30s\"", b, err)
	}
	if err := d.UnmarshalText([]byte("soon")); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Errorf("UnmarshalText(soon) error = %v, want one naming the value", err)
	}
	if d.D() != 90*time.Second {
		t.Errorf("a failed UnmarshalText changed the value to %s", d.D())
	}
}

func TestLoadClusterExposure(t *testing.T) {
	const key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	for _, bind := range []string{"0.0.0.0:7946", ":7946", "10.0.0.5:7946"} {
		t.Run("no key/"+bind, func(t *testing.T) {
			path := writeConfig(t, "[cluster]\nbind = \""+bind+"\"\n")
			_, err := Load(path, nil)
			wantErrContains(t, err, "cluster.secret_keys", path, `"`+bind+`"`, "not a loopback")
		})
		t.Run("key/"+bind, func(t *testing.T) {
			path := writeConfig(t, "[cluster]\nbind = \""+bind+"\"\nsecret_keys = [\""+key+"\"]\n")
			if _, err := Load(path, nil); err != nil {
				t.Fatalf("Load: %v", err)
			}
		})
	}
}

func TestLoadRefusesPlaceholders(t *testing.T) {
	for _, tc := range []struct{ key, toml string }{
		{"auth.jwt_secret", "[auth]\njwt_secret = \"REPLACE-with-48-random-bytes-REPLACE-with-48-random\"\n"},
		{"auth.api_keys", "[auth]\napi_keys = [\"REPLACE-me\"]\n"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			path := writeConfig(t, tc.toml) // on loopback: refused all the same
			_, err := Load(path, nil)
			wantErrContains(t, err, tc.key, path, "placeholder")
		})
	}
}

func TestLoadAdminListen(t *testing.T) {
	path := writeConfig(t, "[admin]\nlisten = \"0.0.0.0:6060\"\n")
	_, err := Load(path, nil)
	wantErrContains(t, err, "admin.listen", path, "not a loopback")
	path = writeConfig(t, "[admin]\nlisten = \"127.0.0.1:6060\"\n")
	if c, err := Load(path, nil); err != nil || c.Admin.Listen != "127.0.0.1:6060" {
		t.Fatalf("Load: %v", err)
	}
}
