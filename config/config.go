// Package config loads a node's settings: built-in defaults, then a TOML file,
// then WSMESH_<SECTION>_<KEY> environment variables, and validates the result.
// Every error names the key and where its value came from (file or variable).
package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"wsmesh/internal/realip"
)

// Sample values committed in config.toml. A node that listens beyond loopback
// refuses to start with either of them.
const (
	SampleJWTSecret = "wsmesh-sample-jwt-secret-change-me-0123456789"
	SampleAPIKey    = "sample-api-key-change-me"
	// SampleUpstreamSecret is the committed upstream.secret, shared with
	// examples/chat so that the example works out of the box.
	SampleUpstreamSecret = "wsmesh-sample-upstream-secret-change-me-0123456789"
)

// MinSecretBytes is the shortest jwt_secret accepted on a non-loopback listener.
const MinSecretBytes = 32

// DefaultSource names the configuration when no file was read.
const DefaultSource = "built-in defaults"

// Config mirrors config.toml. Field comments give the default.
type Config struct {
	Node     Node     `toml:"node"`
	HTTP     HTTP     `toml:"http"`
	Cluster  Cluster  `toml:"cluster"`
	Auth     Auth     `toml:"auth"`
	Session  Session  `toml:"session"`
	Rooms    Rooms    `toml:"rooms"`
	Upstream Upstream `toml:"upstream"`
	Log      Log      `toml:"log"`
	Admin    Admin    `toml:"admin"`

	// Source is the file the config was read from, or DefaultSource.
	Source string `toml:"-"`
	// GeneratedSecret is true when jwt_secret was empty and a random one was made.
	GeneratedSecret bool `toml:"-"`

	origin map[string]string // "section.key" -> "file F" or "variable V"
}

// Node is the [node] table.
type Node struct {
	Name            string   `toml:"name"`             // default: the hostname
	ShutdownTimeout Duration `toml:"shutdown_timeout"` // default "10s"
}

// HTTP is the [http] table.
type HTTP struct {
	Listen          string   `toml:"listen"`             // default "127.0.0.1:8080"
	MaxBodyBytes    int64    `toml:"max_body_bytes"`     // default 1048576
	MaxUsersPerSend int      `toml:"max_users_per_send"` // default 1000
	ReadTimeout     Duration `toml:"read_timeout"`       // default "30s": a request's headers and body must arrive within it
	TrustedProxies  []string `toml:"trusted_proxies"`    // IPs or CIDRs whose X-Forwarded-For is believed; default none
	Demo            string   `toml:"demo"`               // the demo page at /demo/: "auto" (on when listen is loopback), "on", "off"
}

// DemoEnabled reports whether the demo page is served.
func (h HTTP) DemoEnabled() bool {
	return h.Demo == "on" || h.Demo == "auto" && IsLoopback(h.Listen)
}

// Cluster is the [cluster] table.
type Cluster struct {
	Bind       string   `toml:"bind"`        // default "127.0.0.1:7946"
	Advertise  string   `toml:"advertise"`   // default: the bind address
	Seeds      []string `toml:"seeds"`       // default: none (a cluster of one)
	SecretKeys []string `toml:"secret_keys"` // base64 AES keys; default: none (no encryption)
}

// Auth is the [auth] table.
type Auth struct {
	JWTSecret      string   `toml:"jwt_secret"`      // default: random, with a warning
	APIKeys        []string `toml:"api_keys"`        // default: none (API open, loopback only)
	AllowedOrigins []string `toml:"allowed_origins"` // default: any origin
}

// Session is the [session] table.
type Session struct {
	PingInterval    Duration `toml:"ping_interval"`     // default "25s"
	IdleTimeout     Duration `toml:"idle_timeout"`      // default "60s"
	WriteTimeout    Duration `toml:"write_timeout"`     // default "10s"
	SendQueue       int      `toml:"send_queue"`        // default 256
	MaxMessageBytes int      `toml:"max_message_bytes"` // default 65536
	SingleDevice    bool     `toml:"single_device"`     // default false
	MaxConnections  int      `toml:"max_connections"`   // default 0: the open-file limit less a reserve
	MaxClientRate   int      `toml:"max_client_rate"`   // default 50 frames/s, burst twice that; 0: no limit
	Compression     bool     `toml:"compression"`       // default false: permessage-deflate with clients that ask for it
}

// Rooms is the [rooms] table.
type Rooms struct {
	MaxPerSession int `toml:"max_per_session"` // default 100: rooms one session may be in at once
}

// Upstream is the [upstream] table: client messages and session events
// to the backend.
type Upstream struct {
	URL      string   `toml:"url"`       // default "": off
	Secret   string   `toml:"secret"`    // required with url: at least 32 bytes, signs every POST
	Events   []string `toml:"events"`    // default ["message","connect","disconnect"]
	Timeout  Duration `toml:"timeout"`   // default "5s": one POST
	RetryFor Duration `toml:"retry_for"` // default "1m": an event not accepted this long after it was queued is dropped (after one try at least)
	MaxBatch int      `toml:"max_batch"` // default 100 events per POST
	Queue    int      `toml:"queue"`     // default 10000 events waiting
}

// Admin is the [admin] table.
type Admin struct {
	// Listen, if set, serves Go's profiler (/debug/pprof/) there; default
	// "" (off). Only on a loopback address: it has no authentication.
	Listen string `toml:"listen"`
}

// Log is the [log] table.
type Log struct {
	Level  string `toml:"level"`  // default "info": debug, info, warn, error
	Format string `toml:"format"` // default "auto": tint on a terminal, JSON otherwise; or "json", "text"
}

// Duration is a time.Duration written as a string ("25s") in TOML.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. \"25s\", \"1m\")", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns the built-in defaults: one node on loopback.
// jwt_secret is left empty; Load fills it with a random one.
func Default() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "wsmesh"
	}
	return Config{
		Node: Node{Name: host, ShutdownTimeout: Duration(10 * time.Second)},
		HTTP: HTTP{Listen: "127.0.0.1:8080", MaxBodyBytes: 1 << 20, MaxUsersPerSend: 1000, ReadTimeout: Duration(30 * time.Second), Demo: "auto"},
		Cluster: Cluster{
			Bind: "127.0.0.1:7946",
		},
		Session: Session{
			PingInterval:    Duration(25 * time.Second),
			IdleTimeout:     Duration(60 * time.Second),
			WriteTimeout:    Duration(10 * time.Second),
			SendQueue:       256,
			MaxMessageBytes: 64 << 10,
			MaxClientRate:   50,
		},
		Rooms: Rooms{MaxPerSession: 100},
		Upstream: Upstream{
			Events:  []string{"message", "connect", "disconnect"},
			Timeout: Duration(5 * time.Second), RetryFor: Duration(time.Minute), MaxBatch: 100, Queue: 10000,
		},
		Log:    Log{Level: "info", Format: "auto"},
		Source: DefaultSource,
	}
}

// Load reads the config. path "" means ./config.toml if it exists, else the
// built-in defaults. env is a list of KEY=VALUE pairs (os.Environ()).
func Load(path string, env []string) (*Config, error) {
	c := Default()
	c.origin = map[string]string{}
	explicit := path != ""
	if !explicit {
		if _, err := os.Stat("config.toml"); err == nil {
			path = "config.toml"
		}
	}
	if path != "" {
		if err := c.readFile(path); err != nil {
			return nil, err
		}
	}
	if err := c.applyEnv(env); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.Auth.JWTSecret == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("config: generate jwt_secret: %w", err)
		}
		c.Auth.JWTSecret = base64.RawURLEncoding.EncodeToString(b)
		c.GeneratedSecret = true
	}
	return &c, nil
}

func (c *Config) readFile(path string) error {
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("config: %s: file not found", path)
		}
		return fmt.Errorf("config: %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("config: %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	c.Source = path
	for _, k := range md.Keys() {
		c.origin[k.String()] = "file " + path
	}
	return nil
}

// where says where key's value came from, for error messages.
func (c *Config) where(key string) string {
	if o, ok := c.origin[key]; ok {
		return o
	}
	if c.Source == DefaultSource {
		return DefaultSource
	}
	return "default, file " + c.Source
}

func (c *Config) keyErr(key, format string, args ...any) error {
	return fmt.Errorf("config: %s (%s): %s", key, c.where(key), fmt.Sprintf(format, args...))
}

func (c *Config) validate() error {
	if strings.TrimSpace(c.Node.Name) == "" {
		return c.keyErr("node.name", "must not be empty")
	}
	if c.Node.ShutdownTimeout <= 0 {
		return c.keyErr("node.shutdown_timeout", "must be positive, got %s", c.Node.ShutdownTimeout.D())
	}
	// Every placeholder at once, and with them the other secrets too weak
	// for this listener: an operator replaces them all in one go.
	placeholders := map[string]error{}
	for _, kv := range []struct {
		key  string
		vals []string
	}{{"auth.jwt_secret", []string{c.Auth.JWTSecret}}, {"auth.api_keys", c.Auth.APIKeys}, {"cluster.secret_keys", c.Cluster.SecretKeys}, {"upstream.secret", c.upstreamSecrets()}} {
		if i := slices.IndexFunc(kv.vals, func(v string) bool { return strings.HasPrefix(v, "REPLACE") }); i >= 0 {
			placeholders[kv.key] = c.keyErr(kv.key, "is still the example's placeholder %q: set a real value", kv.vals[i])
		}
	}
	if len(placeholders) > 0 {
		for key, err := range c.exposure() {
			if placeholders[key] == nil {
				placeholders[key] = err
			}
		}
		return errors.Join(values(placeholders)...)
	}
	if err := checkAddr(c.HTTP.Listen); err != nil {
		return c.keyErr("http.listen", "%v", err)
	}
	if c.HTTP.MaxBodyBytes <= 0 {
		return c.keyErr("http.max_body_bytes", "must be positive, got %d", c.HTTP.MaxBodyBytes)
	}
	if c.HTTP.MaxUsersPerSend <= 0 {
		return c.keyErr("http.max_users_per_send", "must be positive, got %d", c.HTTP.MaxUsersPerSend)
	}
	if _, err := realip.Parse(c.HTTP.TrustedProxies); err != nil {
		return c.keyErr("http.trusted_proxies", "%v", err)
	}
	switch c.HTTP.Demo {
	case "auto", "on", "off":
	default:
		return c.keyErr("http.demo", "must be one of auto, on, off, got %q", c.HTTP.Demo)
	}
	if err := checkAddr(c.Cluster.Bind); err != nil {
		return c.keyErr("cluster.bind", "%v", err)
	}
	if c.Cluster.Advertise != "" {
		if err := checkAddr(c.Cluster.Advertise); err != nil {
			return c.keyErr("cluster.advertise", "%v", err)
		}
	}
	for _, s := range c.Cluster.Seeds {
		if err := checkAddr(s); err != nil {
			return c.keyErr("cluster.seeds", "%v", err)
		}
	}
	for i, k := range c.Cluster.SecretKeys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return c.keyErr("cluster.secret_keys", "key %d is not valid base64", i+1)
		}
		if n := len(b); n != 16 && n != 24 && n != 32 {
			return c.keyErr("cluster.secret_keys", "key %d decodes to %d bytes, want 16, 24 or 32", i+1, n)
		}
	}
	for _, k := range c.Auth.APIKeys {
		if k == "" {
			return c.keyErr("auth.api_keys", "an empty key is not allowed")
		}
	}
	s := c.Session
	for _, d := range []struct {
		key string
		v   Duration
	}{{"session.ping_interval", s.PingInterval}, {"session.idle_timeout", s.IdleTimeout}, {"session.write_timeout", s.WriteTimeout}, {"http.read_timeout", c.HTTP.ReadTimeout}} {
		if d.v <= 0 {
			return c.keyErr(d.key, "must be positive, got %s", d.v.D())
		}
	}
	if s.IdleTimeout <= s.PingInterval {
		return c.keyErr("session.idle_timeout", "must be longer than session.ping_interval (%s), got %s", s.PingInterval.D(), s.IdleTimeout.D())
	}
	if s.SendQueue <= 0 {
		return c.keyErr("session.send_queue", "must be positive, got %d", s.SendQueue)
	}
	if s.MaxConnections < 0 {
		return c.keyErr("session.max_connections", "must be 0 (derived from the open-file limit) or positive, got %d", s.MaxConnections)
	}
	if s.MaxClientRate < 0 {
		return c.keyErr("session.max_client_rate", "must be 0 (no limit) or positive, got %d", s.MaxClientRate)
	}
	if s.MaxMessageBytes < 64 {
		return c.keyErr("session.max_message_bytes", "must be at least 64, got %d", s.MaxMessageBytes)
	}
	if c.Rooms.MaxPerSession < 1 {
		return c.keyErr("rooms.max_per_session", "must be at least 1, got %d", c.Rooms.MaxPerSession)
	}
	if err := c.validateUpstream(); err != nil {
		return err
	}
	if c.Admin.Listen != "" {
		if err := checkAddr(c.Admin.Listen); err != nil {
			return c.keyErr("admin.listen", "%v", err)
		}
		if !IsLoopback(c.Admin.Listen) {
			return c.keyErr("admin.listen", "%q is not a loopback address: the profiler has no authentication", c.Admin.Listen)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return c.keyErr("log.level", "must be one of debug, info, warn, error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "json", "text":
	default:
		return c.keyErr("log.format", "must be one of auto, json, text, got %q", c.Log.Format)
	}
	return c.checkExposure()
}

// upstreamSecrets is upstream.secret if upstream is on, for the
// placeholder check: a placeholder in an unused key is no error.
func (c *Config) upstreamSecrets() []string {
	if c.Upstream.URL == "" {
		return nil
	}
	return []string{c.Upstream.Secret}
}

// validateUpstream checks the [upstream] table when upstream.url is set.
func (c *Config) validateUpstream() error {
	u := c.Upstream
	if u.URL == "" {
		return nil
	}
	if p, err := url.Parse(u.URL); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return c.keyErr("upstream.url", "must be an http:// or https:// URL, got %q", u.URL)
	}
	if len(u.Secret) < MinSecretBytes {
		return c.keyErr("upstream.secret", "must be at least %d bytes when upstream.url is set, got %d", MinSecretBytes, len(u.Secret))
	}
	for _, e := range u.Events {
		if e != "message" && e != "connect" && e != "disconnect" {
			return c.keyErr("upstream.events", "unknown event %q: the events are message, connect, disconnect", e)
		}
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"upstream.timeout", u.Timeout}, {"upstream.retry_for", u.RetryFor}} {
		if d.v <= 0 {
			return c.keyErr(d.key, "must be positive, got %s", d.v.D())
		}
	}
	if u.MaxBatch < 1 {
		return c.keyErr("upstream.max_batch", "must be at least 1, got %d", u.MaxBatch)
	}
	if u.Queue < u.MaxBatch {
		return c.keyErr("upstream.queue", "must be at least upstream.max_batch (%d), got %d", u.MaxBatch, u.Queue)
	}
	return nil
}

// checkExposure refuses weak secrets on a listener reachable from other hosts.
func (c *Config) checkExposure() error {
	return errors.Join(values(c.exposure())...)
}

// exposure lists, by key, the secrets too weak for a listener reachable
// from other hosts: at most one error per key.
func (c *Config) exposure() map[string]error {
	out := map[string]error{}
	if !IsLoopback(c.Cluster.Bind) && len(c.Cluster.SecretKeys) == 0 {
		out["cluster.secret_keys"] = c.keyErr("cluster.secret_keys", "is empty; cluster.bind %q is not a loopback address, so gossip and relay must be encrypted: set a random key (head -c 32 /dev/urandom | base64)", c.Cluster.Bind)
	}
	if IsLoopback(c.HTTP.Listen) {
		return out
	}
	why := fmt.Sprintf("http.listen %q is not a loopback address", c.HTTP.Listen)
	switch {
	case c.Auth.JWTSecret == "":
		out["auth.jwt_secret"] = c.keyErr("auth.jwt_secret", "is empty; %s, so set a random secret of at least %d bytes", why, MinSecretBytes)
	case c.Auth.JWTSecret == SampleJWTSecret:
		out["auth.jwt_secret"] = c.keyErr("auth.jwt_secret", "is the committed sample secret; %s, so set your own random secret", why)
	case len(c.Auth.JWTSecret) < MinSecretBytes:
		out["auth.jwt_secret"] = c.keyErr("auth.jwt_secret", "is %d bytes; %s, so it must be at least %d bytes", len(c.Auth.JWTSecret), why, MinSecretBytes)
	}
	if c.Upstream.URL != "" && c.Upstream.Secret == SampleUpstreamSecret {
		out["upstream.secret"] = c.keyErr("upstream.secret", "is the committed sample secret; %s, so set your own random secret (and the same in your backend)", why)
	}
	switch {
	case len(c.Auth.APIKeys) == 0:
		out["auth.api_keys"] = c.keyErr("auth.api_keys", "is empty; %s, so POST /send must be protected by an API key", why)
	case slices.Contains(c.Auth.APIKeys, SampleAPIKey):
		out["auth.api_keys"] = c.keyErr("auth.api_keys", "holds the committed sample key; %s, so set your own keys", why)
	}
	return out
}

// values returns m's errors sorted by key.
func values(m map[string]error) []error {
	var out []error
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

// checkAddr accepts "host:port" with a port in 0..65535 (0: pick one).
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid address %q (want host:port)", addr)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("invalid host in %q", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("invalid port in %q", addr)
	}
	return nil
}

// IsLoopback reports whether a host:port listens on loopback only.
// An empty host ("":8080) means every interface and is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
