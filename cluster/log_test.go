package cluster

import (
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestLogBridgeLevels(t *testing.T) {
	var buf syncBuffer
	b := &logBridge{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, line := range []string{
		"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n",
		"[INFO] memberlist: Suspect n2 has failed, no acks received\n",
		"[WARN] memberlist: Refuting a suspect message\n",
		"[ERR] memberlist: Conflicting address for n1\n",
		"no prefix at all\n",
	} {
		if n, err := b.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	out := buf.String()
	for _, want := range []string{
		`level=DEBUG msg="memberlist: Stream connection from=127.0.0.1:1"`,
		`level=INFO msg="memberlist: Suspect n2 has failed, no acks received"`,
		`level=WARN msg="memberlist: Refuting a suspect message"`,
		`level=ERROR msg="memberlist: Conflicting address for n1"`,
		`level=INFO msg="no prefix at all"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s\n%s", want, out)
		}
	}
}

// Every line the cluster logs, its own and memberlist's, names its node: in
// a process running one node it is the only way to tell the node apart in
// a shared log.
func TestEveryClusterLineNamesItsNode(t *testing.T) {
	logs := &syncBuffer{}
	a, _ := testCluster(t, "a", nil, nil, logs)
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	waitUntil(t, "a and b linked", func() bool { return hasPeer(a, "b") && hasPeer(b, "a") })
	if err := b.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a to see b leave", func() bool { return !hasPeer(a, "b") })
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) < 3 {
		t.Fatalf("only %d log lines from a:\n%s", len(lines), logs)
	}
	for _, l := range lines {
		if !strings.Contains(l, " node=a") {
			t.Errorf("a cluster line without node=a: %s", l)
		}
	}
}
