package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestRestartedMemberSessionsReported: a member that comes back as a new
// run before gossip declared it dead (a crash and a fast restart) had
// its previous run's sessions end unannounced: its heir reports them
// (Config.OnNodeFailed), as it would for a member declared dead.
func TestRestartedMemberSessionsReported(t *testing.T) {
	type report struct {
		node     string
		sessions []Located
	}
	got := make(chan report, 4)
	a, _ := testCluster(t, "a", nil, nil, nil, func(c *Config) {
		c.OnNodeFailed = func(node string, sessions []Located) { got <- report{node, sessions} }
	})
	b, _ := testCluster(t, "b", []string{a.Addr()}, nil, nil)
	b.AddLocal(LocalSession{User: "u", Device: "web", Session: "s1", Stamp: b.Now()})
	b.AddLocal(LocalSession{User: "v", Device: "app", Session: "s2", Stamp: b.Now()})
	waitUntil(t, "a holds b's sessions", func() bool { return a.table.sessionsOf("b") == 2 })

	// What memberlist tells a when b's new run gossips its new epoch.
	var node *memberlist.Node
	for _, m := range a.ml.Members() {
		if m.Name == "b" {
			n := *m
			node = &n
		}
	}
	if node == nil {
		t.Fatal("a does not know b")
	}
	node.Meta = metaMsg{Epoch: metaEpoch(node.Meta) + 1}.append(nil)
	(*events)(a).NotifyUpdate(node)

	select {
	case r := <-got:
		var ids []string
		for _, l := range r.sessions {
			ids = append(ids, l.Session)
		}
		slices.Sort(ids)
		if r.node != "b" || fmt.Sprint(ids) != "[s1 s2]" {
			t.Fatalf("reported %s with %v, want b with s1 and s2", r.node, ids)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the restarted member's sessions were not reported")
	}
}
