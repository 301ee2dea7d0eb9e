package main

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"wsmesh/internal/faultnet"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// roomCount is the member count of room that node's GET /rooms/{room}
// answers, and its nodes.
func roomCount(t *testing.T, n *nodetest.Node, room string) (int, string) {
	t.Helper()
	code, out, _ := n.API(t, "GET", "/rooms/"+url.PathEscape(room), "")
	if code != 200 {
		t.Fatalf("GET /rooms/%s on %s: %d %v", room, n.Cfg.Node.Name, code, out)
	}
	return int(out["members"].(float64)), fmt.Sprint(out["nodes"])
}

// waitRoomCount waits until every node counts members in room.
func waitRoomCount(t *testing.T, nodes []*nodetest.Node, room string, members int) {
	t.Helper()
	testsupport.WaitFor(t, fmt.Sprintf("%d members of %s on every node", members, room), func() bool {
		for _, n := range nodes {
			if got, _ := roomCount(t, n, room); got != members {
				return false
			}
		}
		return true
	})
}

// join sends a join frame and waits for its answer.
func join(t *testing.T, c *testsupport.WSClient, room string) map[string]any {
	t.Helper()
	c.Write(t, fmt.Sprintf(`{"type":"join","room":%q,"id":"j1"}`, room))
	return c.Next(t)
}

// TestRoomPublishAcrossNodes: members on t2 and t3 (two joined by their
// own frame, one by the backend) get every publish made through t1, once
// and in order; the answer counts them per node; t4, with no members, gets
// no relay item at all, and t2 and t3 one per publish.
func TestRoomPublishAcrossNodes(t *testing.T) {
	nodes := nodetest.StartCluster(t, 4)
	t1, t2, t3, t4 := nodes[0], nodes[1], nodes[2], nodes[3]
	a := t2.Dial(t, t2.TokenRooms(t, "a", "web", "live:*"), testsupport.DialOpts{})
	b := t3.Dial(t, t3.TokenRooms(t, "b", "web", "live:1"), testsupport.DialOpts{})
	c := t3.Dial(t, t3.Token(t, "c", "web"), testsupport.DialOpts{}) // no rooms claim: the backend joins it
	for name, cl := range map[string]*testsupport.WSClient{"a": a, "b": b} {
		if f := join(t, cl, "live:1"); f["type"] != "joined" || f["room"] != "live:1" {
			t.Fatalf("%s's join answered %v", name, f)
		}
	}
	nodetest.WaitRoutable(t, nodes, "c", "t3")
	code, out, _ := t1.API(t, "POST", "/rooms/join", `{"room":"live:1","users":["c","nobody"]}`)
	if code != 200 || out["joined"] != 1.0 || out["offline"] != 1.0 {
		t.Fatalf("/rooms/join: %d %v", code, out)
	}
	if f := c.Next(t); f["type"] != "joined" || f["room"] != "live:1" {
		t.Fatalf("c got %v, want joined", f)
	}
	waitRoomCount(t, nodes, "live:1", 3)
	if _, per := roomCount(t, t4, "live:1"); per != "[map[members:1 node:t2] map[members:2 node:t3]]" {
		t.Fatalf("t4's view of live:1 per node: %s", per)
	}

	const publishes = 50
	var ids []any
	for i := range publishes {
		out := t1.PostJSON(t, "/publish", fmt.Sprintf(`{"room":"live:1","data":{"n":%d}}`, i))
		if out["delivered"] != 3.0 || fmt.Sprint(out["nodes"]) != "[map[delivered:1 node:t2] map[delivered:2 node:t3]]" || fmt.Sprint(out["unreachable"]) != "[]" {
			t.Fatalf("publish %d: %v", i, out)
		}
		ids = append(ids, out["id"])
	}
	for name, cl := range map[string]*testsupport.WSClient{"a": a, "b": b, "c": c} {
		for i := range publishes {
			f := cl.Next(t)
			if f["type"] != "message" || f["room"] != "live:1" || f["id"] != ids[i] || fmt.Sprint(f["data"]) != fmt.Sprintf("map[n:%d]", i) {
				t.Fatalf("%s: frame %d is %v, want publish %d", name, i, f, i)
			}
		}
		select {
		case extra := <-cl.Frames:
			t.Fatalf("%s got an extra frame %s", name, extra)
		default:
		}
	}
	for _, tt := range []struct {
		n    *nodetest.Node
		want int
	}{{t1, 0}, {t2, publishes}, {t3, publishes}, {t4, 0}} {
		if m := tt.n.Metrics(t); !strings.Contains(m, fmt.Sprintf("\nwsmesh_fanout_items_received_total %d\n", tt.want)) {
			t.Errorf("%s: want wsmesh_fanout_items_received_total %d", tt.n.Cfg.Node.Name, tt.want)
		}
	}

	// Members listed from the nodes that have them.
	code, list, _ := t4.API(t, "GET", "/rooms/live:1/members?limit=2", "")
	if code != 200 || list["total"] != 3.0 || len(list["members"].([]any)) != 2 {
		t.Fatalf("members?limit=2: %d %v", code, list)
	}
}

// TestRoomMembershipEnds: a leave frame, /rooms/leave, a closed
// connection and an eviction each take a member out of the room on
// every node; a node cut off from the others loses its members from the
// room counts once it is declared dead, and a publish meanwhile names it
// unreachable.
func TestRoomMembershipEnds(t *testing.T) {
	fn := faultnet.New(1)
	nodes := nodetest.StartCluster(t, 3, nodetest.FaultNet(fn))
	t1, t2, t3 := nodes[0], nodes[1], nodes[2]
	tok := func(n *nodetest.Node, user string) string { return n.TokenRooms(t, user, "web", "r") }
	leaver := t2.Dial(t, tok(t2, "leaver"), testsupport.DialOpts{})
	kicked := t2.Dial(t, tok(t2, "kicked"), testsupport.DialOpts{})
	closer := t2.Dial(t, tok(t2, "closer"), testsupport.DialOpts{})
	evicted := t2.Dial(t, tok(t2, "evicted"), testsupport.DialOpts{})
	far := t3.Dial(t, tok(t3, "far"), testsupport.DialOpts{})
	for _, c := range []*testsupport.WSClient{leaver, kicked, closer, evicted, far} {
		if f := join(t, c, "r"); f["type"] != "joined" {
			t.Fatalf("join answered %v", f)
		}
	}
	waitRoomCount(t, nodes, "r", 5)

	leaver.Write(t, `{"type":"leave","room":"r"}`)
	if f := leaver.Next(t); f["type"] != "left" || f["room"] != "r" {
		t.Fatalf("leave answered %v", f)
	}
	waitRoomCount(t, nodes, "r", 4)
	nodetest.WaitRoutable(t, nodes, "kicked", "t2")
	if code, out, _ := t1.API(t, "POST", "/rooms/leave", `{"room":"r","users":["kicked"]}`); code != 200 || out["left"] != 1.0 {
		t.Fatalf("/rooms/leave: %d %v", code, out)
	}
	if f := kicked.Next(t); f["type"] != "left" {
		t.Fatalf("kicked got %v, want left", f)
	}
	waitRoomCount(t, nodes, "r", 3)
	closer.Close()
	waitRoomCount(t, nodes, "r", 2)
	again := t1.Dial(t, tok(t1, "evicted"), testsupport.DialOpts{}) // a newer login: the old one goes, its rooms with it
	if code, _ := evicted.WaitClose(t); code != 4000 {
		t.Fatalf("evicted closed with %d", code)
	}
	waitRoomCount(t, nodes, "r", 1)
	if out := t1.PostJSON(t, "/publish", `{"room":"r","data":"only far"}`); out["delivered"] != 1.0 {
		t.Fatalf("publish: %v", out)
	}
	if f := far.Next(t); f["data"] != "only far" {
		t.Fatalf("far got %v", f)
	}
	select {
	case b := <-again.Frames:
		t.Fatalf("the new login, in no room, got %s", b)
	default:
	}

	fn.Isolate("t3")
	out := t1.PostJSON(t, "/publish", `{"room":"r","data":"t3 is gone"}`)
	if out["delivered"] != 0.0 || fmt.Sprint(out["unreachable"]) != "[t3]" {
		t.Fatalf("publish to a room on a cut-off node: %v", out)
	}
	testsupport.PollUntil(t, "t3's members gone from t1's room count", 3*testsupport.WaitLimit, func() bool {
		n, _ := roomCount(t, t1, "r")
		return n == 0
	})
	if out := t1.PostJSON(t, "/publish", `{"room":"r","data":"nobody"}`); out["delivered"] != 0.0 || fmt.Sprint(out["nodes"]) != "[]" || fmt.Sprint(out["unreachable"]) != "[]" {
		t.Fatalf("publish once t3 is dead: %v", out)
	}
}

// TestRoomBadInput: names outside the rules, joins the token does not
// allow, joins beyond rooms.max_per_session: error frames, and nothing
// changes; bad API bodies: 400.
func TestRoomBadInput(t *testing.T) {
	cfg := nodetest.Config(t)
	cfg.Rooms.MaxPerSession = 2
	n := nodetest.Start(t, cfg)
	c := n.Dial(t, n.TokenRooms(t, "u", "web", "live:*", "news"), testsupport.DialOpts{})
	for _, tt := range []struct{ room, reason string }{
		{"has space", "bad room name"},
		{"", "bad room name"},
		{strings.Repeat("x", 201), "bad room name"},
		{"sports", "not allowed"},
		{"live", "not allowed"},
	} {
		f := join(t, c, tt.room)
		if f["type"] != "error" || f["op"] != "join" || f["id"] != "j1" || !strings.Contains(fmt.Sprint(f["reason"]), tt.reason) {
			t.Errorf("join %q answered %v, want an error with %q", tt.room, f, tt.reason)
		}
	}
	for _, room := range []string{"live:1", "news"} {
		if f := join(t, c, room); f["type"] != "joined" {
			t.Fatalf("join %s answered %v", room, f)
		}
	}
	if f := join(t, c, "live:1"); f["type"] != "joined" { // already a member: no change
		t.Fatalf("join again answered %v", f)
	}
	if f := join(t, c, "live:2"); f["type"] != "error" || !strings.HasPrefix(fmt.Sprint(f["reason"]), "too many rooms") {
		t.Fatalf("third room answered %v, want too many rooms", f)
	}
	if got, _ := roomCount(t, n, "live:2"); got != 0 {
		t.Fatalf("live:2 has %d members after a refused join", got)
	}

	for _, tt := range []struct{ path, body, want string }{
		{"/publish", `{"data":1}`, "no room"},
		{"/publish", `{"room":"r"}`, "no data"},
		{"/publish", `{"room":"bad name","data":1}`, "bad room name"},
		{"/publish", `{"room":"r","data":1,"users":["u"]}`, `unknown field "users"`},
		{"/broadcast", `{}`, "no data"},
		{"/broadcast", `{"data":1,"room":"r"}`, `unknown field "room"`},
		{"/rooms/join", `{"users":["u"]}`, "no room"},
		{"/rooms/join", `{"room":"r"}`, "no users"},
		{"/rooms/leave", `{"room":"r","sessions":["x"]}`, `unknown field "sessions"`},
	} {
		code, out, _ := n.API(t, "POST", tt.path, tt.body)
		if msg, _ := out["error"].(string); code != 400 || !strings.Contains(msg, tt.want) {
			t.Errorf("POST %s %s: %d %v, want 400 with %q", tt.path, tt.body, code, out, tt.want)
		}
	}
	for _, path := range []string{"/rooms/r/members?limit=0", "/rooms/r/members?limit=1001", "/rooms/r/members?limit=x", "/rooms/bad%20name"} {
		if code, out, _ := n.API(t, "GET", path, ""); code != 400 {
			t.Errorf("GET %s: %d %v, want 400", path, code, out)
		}
	}
}

// TestBroadcastReachesAll: /broadcast reaches every session on every node.
func TestBroadcastReachesAll(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	var clients []*testsupport.WSClient
	for i, n := range nodes {
		c := n.Dial(t, n.Token(t, fmt.Sprintf("u%d", i), "web"), testsupport.DialOpts{})
		clients = append(clients, c)
		c.Session(t)
	}
	out := nodes[0].PostJSON(t, "/broadcast", `{"data":{"notice":"maintenance at 2am"}}`)
	if out["delivered"] != 3.0 || len(out["nodes"].([]any)) != 3 {
		t.Fatalf("broadcast: %v", out)
	}
	for i, c := range clients {
		if f := c.Next(t); f["type"] != "message" || f["id"] != out["id"] || fmt.Sprint(f["data"]) != "map[notice:maintenance at 2am]" {
			t.Fatalf("client %d got %v", i, f)
		}
	}
}
