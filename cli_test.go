package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"wsmesh/internal/testsupport"
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
	good := writeFile(t, "[auth]\njwt_secret = \""+testsupport.Secret+"\"\n")
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
		{"token bad rooms", []string{"token", "-user", "1", "-rooms", "live:*,a b", "-config", good}, 2, "", "bad room name"},
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
	cfgPath := writeFile(t, "[auth]\njwt_secret = \""+testsupport.Secret+"\"\n")
	var out, errb bytes.Buffer
	if code := run([]string{"token", "-user", "42", "-device", "app", "-ttl", "5m", "-config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	a, _ := session.NewAuthenticator([]byte(testsupport.Secret))
	id, err := a.Verify(lines[len(lines)-1])
	if err != nil || id.User != "42" || id.Device != "app" || id.Rooms != nil {
		t.Fatalf("token on the last line: %v %+v", err, id)
	}

	out.Reset()
	if code := run([]string{"token", "-user", "42", "-rooms", "live:*, news,", "-config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("token -rooms: exit %d: %s", code, errb.String())
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if id, err = a.Verify(lines[len(lines)-1]); err != nil || !slices.Equal(id.Rooms, []string{"live:*", "news"}) {
		t.Fatalf("token -rooms live:*, news,: %v, rooms %q; want [live:* news]", err, id.Rooms)
	}

	t.Chdir(t.TempDir()) // no ./config.toml: a random secret would be useless
	errb.Reset()
	if code := run([]string{"token", "-user", "42"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "jwt_secret") {
		t.Fatalf("token with no config: exit %d, %s", code, errb.String())
	}
}
