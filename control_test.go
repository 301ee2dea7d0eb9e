package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// waitSessionEverywhere waits until every node's table lists session id on
// node owner.
func waitSessionEverywhere(t *testing.T, nodes []*nodetest.Node, id, owner string) {
	t.Helper()
	testsupport.WaitFor(t, "session "+id+" in every table", func() bool {
		for _, n := range nodes {
			if l, ok := n.Cluster().Session(id); !ok || l.Node != owner {
				return false
			}
		}
		return true
	})
}

// TestWelcomeFrame: the first frame of an accepted connection names its
// session (unique: two connections get two ids), node, user, device and
// the token's expiry; a refused (4001) connection gets no welcome, only
// the close.
func TestWelcomeFrame(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	n := nodes[1]
	tok := n.TokenTTL(t, "42", "web", time.Hour)
	c := n.Dial(t, tok, testsupport.DialOpts{})
	w := c.Welcome(t)
	exp := time.Now().Add(time.Hour).Unix()
	if w["type"] != "welcome" || w["node"] != "t2" || w["user"] != "42" || w["device"] != "web" {
		t.Fatalf("welcome %v", w)
	}
	if e, _ := w["expires"].(float64); int64(e) < exp-5 || int64(e) > exp {
		t.Fatalf("welcome expires %v, want the token's exp (about %d)", w["expires"], exp)
	}
	id := c.Session(t)
	other := n.Dial(t, n.Token(t, "42", "app"), testsupport.DialOpts{})
	if id2 := other.Session(t); id2 == id || len(id) < 16 {
		t.Fatalf("session ids %q and %q: want two distinct ids of 16 characters or more", id, id2)
	}
	waitSessionEverywhere(t, nodes, id, "t2")

	refused, _, err := n.TryDial("not-a-token", testsupport.DialOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	if code, reason := refused.WaitClose(t); code != 4001 || reason != "token malformed" {
		t.Fatalf("bad token: close %d %q, want 4001", code, reason)
	}
	select {
	case b := <-refused.Frames:
		t.Fatalf("refused connection got a frame: %s", b)
	default:
	}
}

// TestSendBySession: /send by session id through a node that does not hold
// the session reaches that one connection, not the user's other one;
// unknown and malformed ids answer offline; users and sessions together,
// or neither, are a 400 naming both.
func TestSendBySession(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	t1, t2, t3 := nodes[0], nodes[1], nodes[2]
	tab := t3.Dial(t, t3.Token(t, "42", "tab-a"), testsupport.DialOpts{})
	otherTab := t2.Dial(t, t2.Token(t, "42", "tab-b"), testsupport.DialOpts{})
	id := tab.Session(t)
	waitSessionEverywhere(t, nodes, id, "t3")
	waitSessionEverywhere(t, nodes, otherTab.Session(t), "t2") // the send to the user below must find both

	out := t1.Send(t, fmt.Sprintf(`{"sessions":[%q,"no-such-session",""],"data":{"progress":40}}`, id))
	if out["delivered"] != 1.0 || out["offline"] != 2.0 {
		t.Fatalf("send by session: %v", out)
	}
	res := out["results"].([]any)
	if r := res[0].(map[string]any); r["session"] != id || r["user"] != "42" || r["device"] != "tab-a" || r["node"] != "t3" || r["status"] != "delivered" {
		t.Fatalf("result 0 %v", r)
	}
	if r := res[1].(map[string]any); r["session"] != "no-such-session" || r["status"] != "offline" {
		t.Fatalf("result 1 %v", r)
	}
	if f := tab.Next(t); f["id"] != out["id"] || fmt.Sprint(f["data"]) != "map[progress:40]" {
		t.Fatalf("tab got %v", f)
	}
	// The other tab got nothing: the next thing it gets is a message to the user.
	next := t1.Send(t, `{"users":["42"],"data":"all"}`)
	if next["delivered"] != 2.0 {
		t.Fatalf("send to the user: %v", next)
	}
	if f := otherTab.Next(t); f["id"] != next["id"] {
		t.Fatalf("other tab got %v first, want only the message to the user", f)
	}

	for _, tt := range []struct{ body, want string }{
		{fmt.Sprintf(`{"users":["42"],"sessions":[%q],"data":1}`, id), `both "users" and "sessions"`},
		{`{"data":1}`, `give "users" (user ids) or "sessions" (session ids)`},
		{`{"sessions":[],"data":1}`, `no sessions`},
		{`{"sessions":[1],"data":1}`, `wrong type: "sessions" must be an array of strings`},
		{fmt.Sprintf(`{"sessions":[%q],"device":"tab-a","data":1}`, id), `"device" narrows "users"`},
		{`{"sessions":["a","b","c","d","e","f","g","h","i","j","k"],"data":1}`, ""},
	} {
		code, body, _ := t1.API(t, "POST", "/send", tt.body)
		if tt.want == "" { // within the limit: offline each
			if code != 200 || body["offline"] != 11.0 {
				t.Errorf("%s: %d %v", tt.body, code, body)
			}
			continue
		}
		if msg, _ := body["error"].(string); code != 400 || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: %d %v, want 400 with %q", tt.body, code, body, tt.want)
		}
	}
}

// TestPresence: any node answers who is online from its own table,
// sessions on every node included, oldest first; bad input is a 400.
func TestPresence(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	t1, t2, t3 := nodes[0], nodes[1], nodes[2]
	web := t2.Dial(t, t2.Token(t, "42", "web"), testsupport.DialOpts{})
	webID := web.Session(t)
	app := t3.Dial(t, t3.Token(t, "42", "app"), testsupport.DialOpts{})
	appID := app.Session(t)
	waitSessionEverywhere(t, nodes, webID, "t2")
	waitSessionEverywhere(t, nodes, appID, "t3")

	before := time.Now().Add(-time.Minute)
	code, out, _ := t1.API(t, "POST", "/presence", `{"users":["42","7","42"]}`)
	if code != 200 {
		t.Fatalf("presence: %d %v", code, out)
	}
	users := out["users"].([]any)
	if len(users) != 2 {
		t.Fatalf("presence: %v, want 42 and 7 (duplicates dropped)", out)
	}
	u42, u7 := users[0].(map[string]any), users[1].(map[string]any)
	if u7["user"] != "7" || u7["online"] != false || len(u7["sessions"].([]any)) != 0 {
		t.Fatalf("user 7: %v", u7)
	}
	sessions := u42["sessions"].([]any)
	if u42["user"] != "42" || u42["online"] != true || len(sessions) != 2 {
		t.Fatalf("user 42: %v", u42)
	}
	for i, want := range []struct{ id, device, node string }{{webID, "web", "t2"}, {appID, "app", "t3"}} {
		s := sessions[i].(map[string]any)
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(s["connected_at"]))
		if s["session"] != want.id || s["device"] != want.device || s["node"] != want.node || err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("user 42's session %d: %v (connected_at: %v)", i, s, err)
		}
	}

	for _, tt := range []struct{ body, want string }{
		{`{"users":[]}`, "no users"},
		{`{}`, "no users"},
		{`{"users":[""]}`, "users[0] is empty"},
		{`{"users":["u` + strings.Repeat(`","u`, 1000) + `"]}`, "too many users: 1001 (max_users_per_send is 1000)"},
		{`{"sessions":["x"]}`, `unknown field "sessions"`},
		{`{"users":"42"}`, "wrong type"},
	} {
		code, body, _ := t1.API(t, "POST", "/presence", tt.body)
		if msg, _ := body["error"].(string); code != 400 || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: %d %v, want 400 with %q", tt.body, code, body, tt.want)
		}
	}
	if code, _, _ := t1.APIAuth(t, "POST", "/presence", `{"users":["42"]}`, ""); code != 401 {
		t.Errorf("presence without the API key: %d, want 401", code)
	}
}

// TestDisconnect: /disconnect through a node that holds none of them
// closes a user's sessions (one device, then all) and one session by id,
// wherever they are, with 4003 and the reason; each is answered per
// session, and a later /send finds them offline.
func TestDisconnect(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	t1, t2, t3 := nodes[0], nodes[1], nodes[2]
	web := t2.Dial(t, t2.Token(t, "42", "web"), testsupport.DialOpts{})
	app := t3.Dial(t, t3.Token(t, "42", "app"), testsupport.DialOpts{})
	other := t3.Dial(t, t3.Token(t, "7", "web"), testsupport.DialOpts{})
	webID, appID, otherID := web.Session(t), app.Session(t), other.Session(t)
	for id, node := range map[string]string{webID: "t2", appID: "t3", otherID: "t3"} {
		waitSessionEverywhere(t, nodes, id, node)
	}

	code, out, _ := t1.API(t, "POST", "/disconnect", `{"users":["42"],"device":"app","reason":"password changed"}`)
	if code != 200 || out["disconnected"] != 1.0 || out["offline"] != 0.0 {
		t.Fatalf("disconnect 42's app: %d %v", code, out)
	}
	if r := out["results"].([]any)[0].(map[string]any); r["session"] != appID || r["node"] != "t3" || r["status"] != "disconnected" {
		t.Fatalf("result %v", r)
	}
	if code, reason := app.WaitClose(t); code != 4003 || reason != "password changed" {
		t.Fatalf("app closed with %d %q, want 4003 \"password changed\"", code, reason)
	}
	if web.IsClosed() {
		t.Fatal("the web session was closed too")
	}

	code, out, _ = t1.API(t, "POST", "/disconnect", fmt.Sprintf(`{"sessions":[%q,"gone"],"reason":"bye"}`, otherID))
	if code != 200 || out["disconnected"] != 1.0 || out["offline"] != 1.0 {
		t.Fatalf("disconnect by session: %d %v", code, out)
	}
	if code, reason := other.WaitClose(t); code != 4003 || reason != "bye" {
		t.Fatalf("7 closed with %d %q", code, reason)
	}

	code, out, _ = t1.API(t, "POST", "/disconnect", `{"users":["42","nobody"]}`)
	if code != 200 || out["disconnected"] != 1.0 || out["offline"] != 1.0 {
		t.Fatalf("disconnect 42 everywhere: %d %v", code, out)
	}
	if code, _ := web.WaitClose(t); code != 4003 {
		t.Fatalf("web closed with %d, want 4003", code)
	}
	testsupport.WaitFor(t, "the kicked sessions gone from t1's table", func() bool { return t1.Cluster().TableSize() == 0 })
	if m := t3.Metrics(t); !strings.Contains(m, "wsmesh_disconnects_total 2\n") {
		t.Error("t3's /metrics lacks wsmesh_disconnects_total 2")
	}
	if out := t1.Send(t, `{"users":["42","7"],"data":1}`); out["offline"] != 2.0 {
		t.Fatalf("send after disconnect: %v", out)
	}

	for _, tt := range []struct{ body, want string }{
		{`{"users":["42"],"reason":"` + strings.Repeat("x", 121) + `"}`, "reason too long: 121 bytes"},
		{`{"users":["42"],"sessions":["x"]}`, `both "users" and "sessions"`},
		{`{"reason":"x"}`, "no users"},
		{`{"users":["42"],"reason":7}`, "wrong type"},
	} {
		code, body, _ := t1.API(t, "POST", "/disconnect", tt.body)
		if msg, _ := body["error"].(string); code != 400 || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: %d %v, want 400 with %q", tt.body, code, body, tt.want)
		}
	}
}

// TestTokenLifetime: three sessions whose tokens expire in a second. The
// one that refreshes in band with a longer token outlives its first
// token; the one that does nothing, and the one whose refresh names
// another user (an error frame, nothing changed), are closed with 4001
// "token expired" once the token and the 5 s leeway have passed.
func TestTokenLifetime(t *testing.T) {
	t.Parallel()
	nodes := nodetest.StartCluster(t, 3)
	n, entry := nodes[1], nodes[0]
	idle := n.Dial(t, n.TokenTTL(t, "idle", "web", time.Second), testsupport.DialOpts{})
	fresh := n.Dial(t, n.TokenTTL(t, "fresh", "web", time.Second), testsupport.DialOpts{})
	wrong := n.Dial(t, n.TokenTTL(t, "wrong", "web", time.Second), testsupport.DialOpts{})
	start := time.Now()
	firstExp := fresh.Welcome(t)["expires"].(float64)

	fresh.Write(t, fmt.Sprintf(`{"type":"refresh","token":%q}`, n.TokenTTL(t, "fresh", "web", time.Hour)))
	f := fresh.Next(t)
	if exp, _ := f["expires"].(float64); f["type"] != "refreshed" || exp < firstExp+3000 {
		t.Fatalf("refresh answered %v, want refreshed with an expiry an hour away", f)
	}
	wrong.Write(t, fmt.Sprintf(`{"type":"refresh","id":"r1","token":%q}`, n.TokenTTL(t, "someone-else", "web", time.Hour)))
	if f := wrong.Next(t); f["type"] != "error" || f["op"] != "refresh" || f["id"] != "r1" || !strings.Contains(fmt.Sprint(f["reason"]), "another user") {
		t.Fatalf("refresh for another user answered %v, want an error frame", f)
	}
	wrong.Write(t, fmt.Sprintf(`{"type":"refresh","token":%q}`, n.TokenTTL(t, "wrong", "app", time.Hour)))
	if f := wrong.Next(t); f["type"] != "error" || !strings.Contains(fmt.Sprint(f["reason"]), "another device") {
		t.Fatalf("refresh for another device answered %v, want an error frame", f)
	}
	wrong.Write(t, `{"type":"refresh","token":5}`)
	if f := wrong.Next(t); f["type"] != "error" || f["op"] != "refresh" || !strings.Contains(fmt.Sprint(f["reason"]), "token missing") {
		t.Fatalf("refresh with a token that is not a string answered %v, want an error frame", f)
	}

	for name, c := range map[string]*testsupport.WSClient{"idle": idle, "wrong": wrong} {
		if code, reason := c.WaitClose(t); code != 4001 || reason != "token expired" {
			t.Fatalf("%s: closed %d %q, want 4001 token expired", name, code, reason)
		}
	}
	if took := time.Since(start); took < 5*time.Second {
		t.Fatalf("closed after %s: before the 5 s leeway", took)
	}
	if fresh.IsClosed() {
		t.Fatalf("the refreshed session was closed: %d %q", fresh.Code, fresh.Reason)
	}
	nodetest.WaitRoutable(t, nodes, "fresh", "t2")
	out := entry.Send(t, `{"users":["fresh","idle"],"data":"still here"}`)
	if out["delivered"] != 1.0 || out["offline"] != 1.0 {
		t.Fatalf("send after the first tokens expired: %v", out)
	}
	if f := fresh.Next(t); f["data"] != "still here" {
		t.Fatalf("refreshed session got %v", f)
	}
	if n.Logs.Count("session token expired: closing with 4001") != 2 {
		t.Errorf("want 2 \"session token expired\" log lines")
	}
	m := n.Metrics(t)
	for _, want := range []string{"wsmesh_token_expiries_total 2", "wsmesh_token_refreshes_total 1", "wsmesh_token_refresh_failures_total 3"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestClientFloodGets4008: a client sending pings far over
// session.max_client_rate is closed with 4008; another client on the
// node keeps receiving what other nodes send it.
func TestClientFloodGets4008(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n := nodes[0]
	flood := n.Dial(t, n.Token(t, "flood", "web"), testsupport.DialOpts{})
	calm := n.Dial(t, n.Token(t, "calm", "web"), testsupport.DialOpts{})
	nodetest.WaitRoutable(t, nodes, "calm", "t1")
	for range 300 { // the default rate is 50/s, burst 100
		if err := flood.Conn.WriteString(`{"type":"ping"}`); err != nil {
			break // closed already
		}
	}
	if code, reason := flood.WaitClose(t); code != 4008 || reason != "too many messages" {
		t.Fatalf("flooding client closed %d %q, want 4008 too many messages", code, reason)
	}
	for i := range 3 {
		out := nodes[1+i%2].Send(t, fmt.Sprintf(`{"users":["calm"],"data":%d}`, i))
		if out["delivered"] != 1.0 {
			t.Fatalf("send to calm: %v", out)
		}
		if f := calm.Next(t); f["data"] != float64(i) {
			t.Fatalf("calm got %v", f)
		}
	}
	if n.Logs.Count("client over its rate limit: closing with 4008") != 1 {
		t.Error("want one 4008 warning")
	}
	if m := n.Metrics(t); !strings.Contains(m, "wsmesh_rate_limited_total 1\n") {
		t.Error("/metrics lacks wsmesh_rate_limited_total 1")
	}
}
