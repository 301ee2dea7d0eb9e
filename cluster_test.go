package main

import (
	"fmt"
	"strings"
	"testing"

	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// TestClusterSendAcrossNodes: /send on t1 reaches a client on t2, the
// answer says t2 delivered it, and t1's /cluster and /metrics show the
// cluster. (The cluster's own behaviour under faults, and the order of
// many calls, is tested in package cluster.)
func TestClusterSendAcrossNodes(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	a, b := nodes[0], nodes[1]
	c := b.Dial(t, b.Token(t, "42", "web"), testsupport.DialOpts{})
	nodetest.WaitRoutable(t, nodes, "42", "t2")

	out := a.Send(t, `{"users":["42","nobody"],"data":{"via":"t1"}}`)
	if out["delivered"] != 1.0 || out["offline"] != 1.0 {
		t.Fatalf("send on t1: %v", out)
	}
	res := out["results"].([]any)[0].(map[string]any)
	if res["node"] != "t2" || res["device"] != "web" || res["status"] != "delivered" {
		t.Fatalf("result %v, want delivered by t2", res)
	}
	if f := c.Next(t); f["id"] != out["id"] || fmt.Sprint(f["data"]) != "map[via:t1]" {
		t.Fatalf("client on t2 got %v", f)
	}
	code, cl, _ := a.API(t, "GET", "/cluster", "")
	if code != 200 || cl["table_size"] != 1.0 || len(cl["members"].([]any)) != 3 {
		t.Fatalf("/cluster on t1: %v", cl)
	}
	metrics := a.Metrics(t)
	for _, want := range []string{`wsmesh_members{state="alive"} 3`, `wsmesh_relay_forward_seconds_count{node="t2",result="ok"} 1`, "wsmesh_table_sessions 1", `wsmesh_relay_batches_total{peer="t2"}`, `wsmesh_relay_batches_total{peer="t3"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("t1's /metrics lacks %q", want)
		}
	}
}
