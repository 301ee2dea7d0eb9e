package testsupport

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
)

// RequireTool returns the path of a program a test drives for real (nginx,
// chromium, ip, systemd-analyze). Missing, it fails the test on CI (where
// .ci/run installs it) and skips it elsewhere, saying how to install it.
func RequireTool(tb testing.TB, name, debianPackage string) string {
	tb.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := fmt.Sprintf("%s not installed (apt-get install %s; .ci/run installs it)", name, debianPackage)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// FreePort returns a port on 127.0.0.1 that is free for TCP and UDP right
// now (memberlist binds both). The kernel may hand it out again before the
// node binds it; with ports from the ephemeral range on a quiet test
// machine that is rare, and the node then fails to start, loudly.
func FreePort(tb testing.TB) int {
	tb.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	tb.Fatal("no port free for both TCP and UDP after 20 tries")
	return 0
}
