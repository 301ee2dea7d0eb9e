package session_test

// Rooms through the hub's public API and real WebSocket clients: join and
// leave frames and their errors, Join and Leave from the backend,
// Publish and Broadcast, and membership ending with the session.

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wsmesh/internal/testsupport"
	"wsmesh/session"
)

// roomToken returns a client token for user and device whose rooms claim
// is rooms.
func roomToken(t *testing.T, user, device string, rooms ...string) string {
	t.Helper()
	a, err := session.NewAuthenticator([]byte(testsupport.Secret))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.MintRooms(user, device, rooms, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// roomObserver records the hub's RoomChanged calls.
type roomObserver struct {
	mu    sync.Mutex
	calls map[string][]int // room -> the counts reported, in order
}

func newRoomObserver() *roomObserver { return &roomObserver{calls: map[string][]int{}} }

func (o *roomObserver) SessionOpened(session.Info) {}
func (o *roomObserver) SessionClosed(session.Info) {}
func (o *roomObserver) RoomChanged(room string, members int) {
	o.mu.Lock()
	o.calls[room] = append(o.calls[room], members)
	o.mu.Unlock()
}

// counts returns the counts reported for room so far.
func (o *roomObserver) counts(room string) []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.calls[room])
}

// expectFrame reads c's next frame and checks its fields.
func expectFrame(t *testing.T, c *testsupport.WSClient, want map[string]any) {
	t.Helper()
	f := c.Next(t)
	if len(f) != len(want) {
		t.Fatalf("got %v, want %v", f, want)
	}
	for k, v := range want {
		if f[k] != v {
			t.Fatalf("got %v, want %v", f, want)
		}
	}
}

// expectRoomError reads c's next frame: an error frame for op whose
// reason starts with reason.
func expectRoomError(t *testing.T, c *testsupport.WSClient, op, id, reason string) {
	t.Helper()
	f := c.Next(t)
	r, _ := f["reason"].(string)
	gotID, hasID := f["id"]
	if f["type"] != "error" || f["op"] != op || !strings.HasPrefix(r, reason) || (id != "") != hasID || (hasID && gotID != id) {
		t.Fatalf("got %v, want an error frame op %q id %q with a reason starting %q", f, op, id, reason)
	}
}

// expectProbe delivers c's user a probe and checks it is the next frame c
// gets: nothing else came before it.
func expectProbe(t *testing.T, h *testHub, c *testsupport.WSClient, user, device string) {
	t.Helper()
	if ds := h.deliver(user, device, "probe", `"probe"`); delivered(ds) != 1 {
		t.Fatalf("probe to %s/%s: %+v", user, device, ds)
	}
	if f := c.Next(t); f["data"] != "probe" {
		t.Fatalf("%s/%s got %v, want nothing before the probe", user, device, f)
	}
}

func TestClientJoinLeave(t *testing.T) {
	obs := newRoomObserver()
	h := serveHub(t, session.Config{Observer: obs})
	c := h.Dial(t, roomToken(t, "u", "", "live:*", "news"), testsupport.DialOpts{})

	c.Write(t, `{"type":"join","room":"live:42"}`)
	expectFrame(t, c, map[string]any{"type": "joined", "room": "live:42"})
	c.Write(t, `{"type":"join","room":"live:42","id":"again"}`) // a member already: joined, no change
	expectFrame(t, c, map[string]any{"type": "joined", "room": "live:42"})
	c.Write(t, `{"type":"join","room":"news"}`)
	expectFrame(t, c, map[string]any{"type": "joined", "room": "news"})
	if n := h.RoomCount("live:42"); n != 1 {
		t.Fatalf("RoomCount(live:42) = %d, want 1", n)
	}

	for _, tc := range []struct{ name, frame, op, id, reason string }{
		{"not allowed", `{"type":"join","room":"sports","id":"c1"}`, "join", "c1", "not allowed"},
		{"prefix is not the room", `{"type":"join","room":"live"}`, "join", "", "not allowed"},
		{"space", `{"type":"join","room":"live:4 2","id":"c2"}`, "join", "c2", "bad room name: "},
		{"empty", `{"type":"join","room":""}`, "join", "", "bad room name: empty"},
		{"missing", `{"type":"join"}`, "join", "", "bad room name: "},
		{"not a string", `{"type":"join","room":42}`, "join", "", "bad room name: not a string"},
		{"too long", `{"type":"join","room":"live:` + strings.Repeat("x", 200) + `"}`, "join", "", "bad room name: "},
		{"non-ASCII", `{"type":"join","room":"live:é"}`, "join", "", "bad room name: "},
		{"leave bad name", `{"type":"leave","room":"a b","id":"l1"}`, "leave", "l1", "bad room name: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.Write(t, tc.frame)
			expectRoomError(t, c, tc.op, tc.id, tc.reason)
		})
	}

	c.Write(t, `{"type":"leave","room":"live:42"}`)
	expectFrame(t, c, map[string]any{"type": "left", "room": "live:42"})
	c.Write(t, `{"type":"leave","room":"live:42"}`) // not a member: left all the same
	expectFrame(t, c, map[string]any{"type": "left", "room": "live:42"})
	c.Write(t, `{"type":"leave","room":"never"}`)
	expectFrame(t, c, map[string]any{"type": "left", "room": "never"})
	if n := h.RoomCount("live:42"); n != 0 {
		t.Fatalf("RoomCount(live:42) = %d after leave, want 0", n)
	}
	if got := obs.counts("live:42"); !slices.Equal(got, []int{1, 0}) {
		t.Errorf("RoomChanged(live:42, ...) counts %v, want [1 0]", got)
	}
	if got := obs.counts("news"); !slices.Equal(got, []int{1}) {
		t.Errorf("RoomChanged(news, ...) counts %v, want [1]", got)
	}
}

func TestClientJoinTooManyRooms(t *testing.T) {
	h := serveHub(t, session.Config{MaxRoomsPerSession: 2})
	c := h.Dial(t, roomToken(t, "u", "", "*"), testsupport.DialOpts{})
	for _, r := range []string{"a", "b"} {
		c.Write(t, `{"type":"join","room":"`+r+`"}`)
		expectFrame(t, c, map[string]any{"type": "joined", "room": r})
	}
	c.Write(t, `{"type":"join","room":"c","id":"j3"}`)
	expectRoomError(t, c, "join", "j3", "too many rooms (max_per_session is 2)")
	c.Write(t, `{"type":"join","room":"a"}`) // a member already: not a third room
	expectFrame(t, c, map[string]any{"type": "joined", "room": "a"})
	if n := h.RoomCount("c"); n != 0 {
		t.Fatalf("RoomCount(c) = %d after a refused join", n)
	}
	c.Write(t, `{"type":"leave","room":"a"}`)
	expectFrame(t, c, map[string]any{"type": "left", "room": "a"})
	c.Write(t, `{"type":"join","room":"c"}`)
	expectFrame(t, c, map[string]any{"type": "joined", "room": "c"})
}

// TestRefreshReplacesAllowedRooms: a refreshed token's rooms claim is what
// the client may join from then on; the rooms it is in stay.
func TestRefreshReplacesAllowedRooms(t *testing.T) {
	h := serveHub(t, session.Config{})
	c := h.Dial(t, roomToken(t, "u", "web", "a:*"), testsupport.DialOpts{})
	c.Write(t, `{"type":"join","room":"a:1"}`)
	expectFrame(t, c, map[string]any{"type": "joined", "room": "a:1"})
	c.Write(t, `{"type":"join","room":"b:1"}`)
	expectRoomError(t, c, "join", "", "not allowed")

	c.Write(t, `{"type":"refresh","token":"`+roomToken(t, "u", "web", "b:*")+`"}`)
	if f := c.Next(t); f["type"] != "refreshed" {
		t.Fatalf("got %v, want refreshed", f)
	}
	c.Write(t, `{"type":"join","room":"a:2"}`)
	expectRoomError(t, c, "join", "", "not allowed")
	c.Write(t, `{"type":"join","room":"b:1"}`)
	expectFrame(t, c, map[string]any{"type": "joined", "room": "b:1"})
	if n := h.RoomCount("a:1"); n != 1 {
		t.Fatalf("RoomCount(a:1) = %d after the refresh, want 1 (joined rooms stay)", n)
	}

	c.Write(t, `{"type":"refresh","token":"`+h.Token(t, "u", "web")+`"}`) // no rooms claim
	if f := c.Next(t); f["type"] != "refreshed" {
		t.Fatalf("got %v, want refreshed", f)
	}
	c.Write(t, `{"type":"join","room":"b:2"}`)
	expectRoomError(t, c, "join", "", "not allowed")

	// A refused refresh changes nothing, its rooms claim included.
	c.Write(t, `{"type":"refresh","token":"`+roomToken(t, "other", "web", "*")+`"}`)
	expectRoomError(t, c, "refresh", "", "refresh refused")
	c.Write(t, `{"type":"join","room":"b:2"}`)
	expectRoomError(t, c, "join", "", "not allowed")
	if n1, n2 := h.RoomCount("a:1"), h.RoomCount("b:1"); n1 != 1 || n2 != 1 {
		t.Fatalf("RoomCount(a:1), (b:1) = %d, %d, want 1, 1", n1, n2)
	}
}

// TestPublishReachesMembersInOrder: each member gets each publish once, in
// the order published, with the room; others get none.
func TestPublishReachesMembersInOrder(t *testing.T) {
	const n = 100
	h := serveHub(t, session.Config{SendQueue: 2 * n})
	web := h.Dial(t, roomToken(t, "m", "web", "r"), testsupport.DialOpts{})
	app := h.Dial(t, roomToken(t, "m", "app", "r"), testsupport.DialOpts{})
	other := h.Dial(t, roomToken(t, "o", "", "r"), testsupport.DialOpts{})
	for _, c := range []*testsupport.WSClient{web, app} {
		c.Write(t, `{"type":"join","room":"r"}`)
		expectFrame(t, c, map[string]any{"type": "joined", "room": "r"})
	}
	if got := h.Publish("nobody-here", session.RoomMessageFrame("x", "nobody-here", []byte(`1`))); got != 0 {
		t.Fatalf("Publish to an empty room: %d, want 0", got)
	}
	for i := range n {
		if got := h.Publish("r", session.RoomMessageFrame("m"+strconv.Itoa(i), "r", []byte(strconv.Itoa(i)))); got != 2 {
			t.Fatalf("Publish %d: %d members took it, want 2", i, got)
		}
	}
	for _, c := range []struct {
		name   string
		c      *testsupport.WSClient
		device string
	}{{"web", web, "web"}, {"app", app, "app"}} {
		for i := range n {
			f := c.c.Next(t)
			if f["type"] != "message" || f["room"] != "r" || f["id"] != "m"+strconv.Itoa(i) || f["data"] != float64(i) {
				t.Fatalf("%s: frame %d is %v, want message m%d of room r", c.name, i, f, i)
			}
		}
		expectProbe(t, h, c.c, "m", c.device) // each publish once
	}
	expectProbe(t, h, other, "o", "") // not a member: none
}

// TestPublishSlowMember: a member whose queue overflows is closed with
// 4002, and the other member gets every publish.
func TestPublishSlowMember(t *testing.T) {
	h := serveHub(t, session.Config{SendQueue: 8})
	slow := h.Dial(t, h.Token(t, "slow", ""), testsupport.DialOpts{NoRead: true, RcvBuf: 4096})
	fast := h.Dial(t, h.Token(t, "fast", ""), testsupport.DialOpts{})
	testsupport.WaitFor(t, "two sessions", func() bool { return h.Len() == 2 })
	for _, u := range []string{"slow", "fast"} {
		if rs := h.Join(u, "", "r"); len(rs) != 1 || rs[0].Err != nil {
			t.Fatalf("Join(%s): %+v", u, rs)
		}
	}
	expectFrame(t, fast, map[string]any{"type": "joined", "room": "r"})

	data := []byte(`"` + strings.Repeat("s", 60<<10) + `"`)
	overflowAt := 0
	for i := 1; i <= 2000; i++ {
		got := h.Publish("r", session.RoomMessageFrame(strconv.Itoa(i), "r", data))
		// Wait for the fast member to get it: only the slow one falls behind.
		if f := fast.Next(t); f["id"] != strconv.Itoa(i) {
			t.Fatalf("fast member: got %v, want message %d", f["id"], i)
		}
		if got == 1 && overflowAt == 0 {
			overflowAt = i
		} else if got != 2 && overflowAt == 0 || got != 1 && overflowAt != 0 {
			t.Fatalf("publish %d: %d took it (overflow at %d)", i, got, overflowAt)
		}
		if overflowAt != 0 && i >= overflowAt+3 {
			break
		}
	}
	if overflowAt == 0 {
		t.Fatal("the slow member's queue never overflowed")
	}
	t.Logf("slow member's queue overflowed at publish %d", overflowAt)
	slow.StartReading()
	if code, reason := slow.WaitClose(t); code != session.CloseSlowConsumer {
		t.Fatalf("slow member closed with %d %q, want 4002", code, reason)
	}
	if got := h.Stats().SlowConsumers; got != 1 {
		t.Errorf("SlowConsumers = %d, want 1", got)
	}
	testsupport.WaitFor(t, "the slow member to leave the room", func() bool { return h.RoomCount("r") == 1 })
}

func TestBroadcast(t *testing.T) {
	h := serveHub(t, session.Config{})
	var clients []*testsupport.WSClient
	for i := range 3 {
		clients = append(clients, h.Dial(t, h.Token(t, fmt.Sprint("b", i), ""), testsupport.DialOpts{}))
	}
	testsupport.WaitFor(t, "three sessions", func() bool { return h.Len() == 3 })
	if rs := h.Join("b0", "", "r"); len(rs) != 1 || rs[0].Err != nil {
		t.Fatalf("Join: %+v", rs)
	}
	expectFrame(t, clients[0], map[string]any{"type": "joined", "room": "r"})
	if got := h.Broadcast(session.MessageFrame("all", []byte(`"everyone"`))); got != 3 {
		t.Fatalf("Broadcast: %d took it, want 3", got)
	}
	for i, c := range clients {
		if f := c.Next(t); f["id"] != "all" || f["data"] != "everyone" {
			t.Fatalf("client %d got %v, want the broadcast", i, f)
		}
		expectProbe(t, h, c, fmt.Sprint("b", i), "") // once
	}
}

// TestBackendJoinLeave: Join and Leave reach the user's sessions (one
// device's, if given), which get joined and left as if they had asked,
// whatever their token's rooms claim, within MaxRoomsPerSession.
func TestBackendJoinLeave(t *testing.T) {
	h := serveHub(t, session.Config{MaxRoomsPerSession: 2})
	web := h.Dial(t, h.Token(t, "u", "web"), testsupport.DialOpts{}) // no rooms claim
	app := h.Dial(t, h.Token(t, "u", "app"), testsupport.DialOpts{})
	testsupport.WaitFor(t, "two sessions", func() bool { return h.Len() == 2 })

	rs := h.Join("u", "", "r1")
	if len(rs) != 2 || rs[0].Err != nil || rs[1].Err != nil || rs[0].Session == "" || rs[0].Session == rs[1].Session {
		t.Fatalf("Join(u, all, r1): %+v, want two sessions joined", rs)
	}
	for _, c := range []*testsupport.WSClient{web, app} {
		expectFrame(t, c, map[string]any{"type": "joined", "room": "r1"})
	}
	if rs := h.Join("u", "app", "r2"); len(rs) != 1 || rs[0].Device != "app" || rs[0].Err != nil {
		t.Fatalf("Join(u, app, r2): %+v", rs)
	}
	expectFrame(t, app, map[string]any{"type": "joined", "room": "r2"})
	if rs := h.Join("u", "app", "r1"); len(rs) != 1 || rs[0].Err != nil { // a member already
		t.Fatalf("Join(u, app, r1) again: %+v", rs)
	}
	expectFrame(t, app, map[string]any{"type": "joined", "room": "r1"})
	if n := h.RoomCount("r1"); n != 2 {
		t.Fatalf("RoomCount(r1) = %d, want 2", n)
	}

	// app is in two rooms: the limit.
	rs = h.Join("u", "", "r3")
	if len(rs) != 2 {
		t.Fatalf("Join(u, all, r3): %+v", rs)
	}
	for _, r := range rs {
		switch r.Device {
		case "web":
			if r.Err != nil {
				t.Errorf("web: %v, want joined", r.Err)
			}
		case "app":
			if !errors.Is(r.Err, session.ErrTooManyRooms) || !strings.HasPrefix(r.Err.Error(), "too many rooms") {
				t.Errorf("app: %v, want ErrTooManyRooms", r.Err)
			}
		}
	}
	expectFrame(t, web, map[string]any{"type": "joined", "room": "r3"})
	expectProbe(t, h, app, "u", "app") // the refused session got nothing
	if n := h.RoomCount("r3"); n != 1 {
		t.Fatalf("RoomCount(r3) = %d, want 1", n)
	}

	if rs := h.Leave("u", "web", "r1"); len(rs) != 1 || rs[0].Device != "web" || rs[0].Err != nil {
		t.Fatalf("Leave(u, web, r1): %+v", rs)
	}
	expectFrame(t, web, map[string]any{"type": "left", "room": "r1"})
	if rs := h.Leave("u", "web", "r1"); len(rs) != 1 || rs[0].Err != nil { // not a member: left all the same
		t.Fatalf("Leave(u, web, r1) again: %+v", rs)
	}
	expectFrame(t, web, map[string]any{"type": "left", "room": "r1"})
	if n := h.RoomCount("r1"); n != 1 {
		t.Fatalf("RoomCount(r1) = %d after web left, want 1", n)
	}

	if rs := h.Join("nobody", "", "r1"); len(rs) != 0 {
		t.Fatalf("Join for a user with no session: %+v", rs)
	}
	if rs := h.Leave("u", "tv", "r1"); len(rs) != 0 {
		t.Fatalf("Leave for a device with no session: %+v", rs)
	}
	if rs := h.Join("u", "web", "bad name"); len(rs) != 1 || rs[0].Err == nil || !strings.HasPrefix(rs[0].Err.Error(), "bad room name: ") {
		t.Fatalf("Join with a bad room name: %+v", rs)
	}
	expectProbe(t, h, web, "u", "web")
}

// TestRoomsLeftWhenSessionEnds: a session closed by its client, evicted
// (by the cluster, or by a newer login here) or disconnected leaves its
// rooms, and the Observer hears every count in order, down to 0.
func TestRoomsLeftWhenSessionEnds(t *testing.T) {
	obs := newRoomObserver()
	h := serveHub(t, session.Config{Observer: obs})
	closer := h.Dial(t, h.Token(t, "closer", ""), testsupport.DialOpts{})
	evicted := h.Dial(t, h.Token(t, "evicted", ""), testsupport.DialOpts{})
	kicked := h.Dial(t, h.Token(t, "kicked", ""), testsupport.DialOpts{})
	replaced := h.Dial(t, h.Token(t, "replaced", "web"), testsupport.DialOpts{})
	testsupport.WaitFor(t, "four sessions", func() bool { return h.Len() == 4 })
	users := []string{"closer", "evicted", "kicked", "replaced"}
	for _, u := range users {
		for _, room := range []string{"own:" + u, "shared"} {
			if rs := h.Join(u, "", room); len(rs) != 1 || rs[0].Err != nil {
				t.Fatalf("Join(%s, %s): %+v", u, room, rs)
			}
		}
	}
	if n := h.RoomCount("shared"); n != 4 {
		t.Fatalf("RoomCount(shared) = %d, want 4", n)
	}

	closer.Close()
	testsupport.WaitFor(t, "the closed session to leave", func() bool { return h.RoomCount("own:closer") == 0 })

	if !h.Evict("evicted", evicted.Session(t)) {
		t.Fatal("Evict found no session")
	}
	if n := h.RoomCount("own:evicted"); n != 0 { // at once
		t.Fatalf("RoomCount(own:evicted) = %d after Evict returned", n)
	}
	if ks := h.Disconnect("kicked", "", "bye"); len(ks) != 1 {
		t.Fatalf("Disconnect: %+v", ks)
	}
	if n := h.RoomCount("own:kicked"); n != 0 {
		t.Fatalf("RoomCount(own:kicked) = %d after Disconnect returned", n)
	}
	newer := h.Dial(t, h.Token(t, "replaced", "web"), testsupport.DialOpts{})
	if code, _ := replaced.WaitClose(t); code != session.CloseEvicted {
		t.Fatalf("replaced session closed with %d, want 4000", code)
	}
	newer.Welcome(t)
	testsupport.WaitFor(t, "the replaced session to leave", func() bool { return h.RoomCount("own:replaced") == 0 })

	for _, u := range users {
		if got := obs.counts("own:" + u); !slices.Equal(got, []int{1, 0}) {
			t.Errorf("RoomChanged(own:%s, ...) counts %v, want [1 0]", u, got)
		}
	}
	if got := obs.counts("shared"); !slices.Equal(got, []int{1, 2, 3, 4, 3, 2, 1, 0}) {
		t.Errorf("RoomChanged(shared, ...) counts %v, want [1 2 3 4 3 2 1 0]", got)
	}
	if total, _ := h.RoomMembers("shared", 10); total != 0 {
		t.Errorf("RoomMembers(shared) total %d, want 0: the newer login joined nothing", total)
	}
	if got := h.Publish("shared", session.RoomMessageFrame("x", "shared", []byte(`1`))); got != 0 {
		t.Errorf("Publish to the emptied room: %d took it", got)
	}
	// The evicted and kicked sessions end: nothing more is reported.
	for _, c := range []*testsupport.WSClient{evicted, kicked} {
		c.WaitClose(t)
	}
	testsupport.WaitFor(t, "every session to end", func() bool { return h.Len() == 1 && h.Stats().Closed == 4 })
	if got := obs.counts("shared"); len(got) != 8 {
		t.Errorf("RoomChanged(shared, ...) counts %v after the sessions closed, want no more calls", got)
	}
}

func TestRoomMembers(t *testing.T) {
	h := serveHub(t, session.Config{})
	want := map[string]session.RoomMember{}
	for i := range 5 {
		u := fmt.Sprint("m", i)
		c := h.Dial(t, h.Token(t, u, "d"+u), testsupport.DialOpts{})
		id := c.Session(t)
		testsupport.WaitFor(t, "the session", func() bool { return h.Len() == i+1 })
		if rs := h.Join(u, "", "r"); len(rs) != 1 || rs[0].Err != nil {
			t.Fatalf("Join(%s): %+v", u, rs)
		}
		want[id] = session.RoomMember{User: u, Device: "d" + u, Session: id}
	}
	for _, tc := range []struct{ limit, want int }{{3, 3}, {5, 5}, {100, 5}, {0, 0}, {-1, 0}} {
		t.Run(fmt.Sprint("limit=", tc.limit), func(t *testing.T) {
			total, ms := h.RoomMembers("r", tc.limit)
			if total != 5 || len(ms) != tc.want {
				t.Fatalf("RoomMembers(r, %d) = %d, %d members; want 5, %d", tc.limit, total, len(ms), tc.want)
			}
			seen := map[string]bool{}
			for _, m := range ms {
				if want[m.Session] != m || seen[m.Session] {
					t.Fatalf("member %+v: not one of %v, or twice", m, want)
				}
				seen[m.Session] = true
			}
		})
	}
	if total, ms := h.RoomMembers("nobody", 10); total != 0 || ms != nil {
		t.Fatalf("RoomMembers of an empty room: %d, %v", total, ms)
	}
	if n := h.RoomCount("r"); n != 5 {
		t.Fatalf("RoomCount(r) = %d, want 5", n)
	}
}

func TestValidRoom(t *testing.T) {
	for _, tc := range []struct {
		name, room string
		ok         bool
	}{
		{"simple", "live:42", true},
		{"one byte", "a", true},
		{"printable edges", "!~", true},
		{"200 bytes", strings.Repeat("x", 200), true},
		{"star", "live:*", true},
		{"empty", "", false},
		{"201 bytes", strings.Repeat("x", 201), false},
		{"space", "live 42", false},
		{"tab", "live\t42", false},
		{"newline", "live\n", false},
		{"DEL", "live\x7f", false},
		{"NUL", "\x00", false},
		{"non-ASCII", "café", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := session.ValidRoom(tc.room)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidRoom(%q) = %v, want ok %v", tc.room, err, tc.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "bad room name: ") {
				t.Fatalf("ValidRoom(%q) = %q, want the prefix \"bad room name: \"", tc.room, err)
			}
		})
	}
}

func TestMintRooms(t *testing.T) {
	a, err := session.NewAuthenticator([]byte(testsupport.Secret))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.MintRooms("u", "web", []string{"live:*", "news"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Verify(tok)
	if err != nil || id.User != "u" || id.Device != "web" || !slices.Equal(id.Rooms, []string{"live:*", "news"}) {
		t.Fatalf("Verify: %+v, %v", id, err)
	}
	if id, err := a.Verify(plainToken(t, a)); err != nil || id.Rooms != nil {
		t.Fatalf("a token without rooms: %+v, %v; want no rooms", id, err)
	}
	if _, err := a.MintRooms("u", "", []string{"ok", "not ok"}, time.Hour); err == nil || !strings.Contains(err.Error(), "bad room name") {
		t.Fatalf("MintRooms with a bad room: %v, want an error", err)
	}
}

func plainToken(t *testing.T, a *session.Authenticator) string {
	t.Helper()
	tok, err := a.Mint("u", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestRoomsJoinRacingClose: backend joins and leaves racing with sessions
// closing leave no member behind, and the last count the Observer hears
// for every room is 0.
func TestRoomsJoinRacingClose(t *testing.T) {
	const users, rooms = 20, 8
	obs := newRoomObserver()
	h := serveHub(t, session.Config{Observer: obs})
	var clients []*testsupport.WSClient
	for i := range users {
		clients = append(clients, h.Dial(t, h.Token(t, fmt.Sprint("u", i), ""), testsupport.DialOpts{}))
	}
	testsupport.WaitFor(t, "every session", func() bool { return h.Len() == users })

	var wg sync.WaitGroup
	for i := range users {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for k := range 50 {
				room := fmt.Sprint("r", k%rooms)
				if k%3 == 2 {
					h.Leave(fmt.Sprint("u", i), "", room)
				} else {
					h.Join(fmt.Sprint("u", i), "", room)
				}
			}
		}()
		go func() {
			defer wg.Done()
			clients[i].Close()
		}()
	}
	wg.Wait()
	testsupport.WaitFor(t, "every session to end", func() bool { return h.Len() == 0 && h.Stats().Closed == users })
	for k := range rooms {
		room := fmt.Sprint("r", k)
		if n := h.RoomCount(room); n != 0 {
			t.Errorf("RoomCount(%s) = %d after every session ended", room, n)
		}
		if got := obs.counts(room); len(got) > 0 && got[len(got)-1] != 0 {
			t.Errorf("RoomChanged(%s, ...) ended with %d, want 0 (counts %v)", room, got[len(got)-1], got)
		}
	}
}
