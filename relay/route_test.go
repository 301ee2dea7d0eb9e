package relay

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/wire"
)

// checkResults fails unless got is want, in order. Session ids are
// random, so they are compared only where want gives one.
func checkResults(t *testing.T, got, want []Result) {
	t.Helper()
	got = slices.Clone(got)
	for i := range got {
		if i < len(want) && want[i].Session == "" {
			got[i].Session = ""
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("results\n got %+v\nwant %+v", got, want)
	}
}

// TestForwardDeliversThroughOwner: a user whose session is on another node
// gets the message through that node's HandleRelay, and /send reports what
// the owner said: delivered on that node and device, or offline when the
// owner has no session for the device asked.
func TestForwardDeliversThroughOwner(t *testing.T) {
	n2, _ := newTestServer(t, Config{Cluster: &fakeCluster{name: "n2"}})
	c := connect(t, n2, serve(t, n2), "u", "web")
	var calls callLog
	n1, _ := newTestServer(t, Config{
		Cluster: &fakeCluster{
			owners: map[string][]string{"u": {"n2"}},
			peers:  map[string]peer{"n2": relayTo(n2, "n1")},
		},
		OnForward: calls.onForward,
	})

	resp := sendResult(t, n1, `{"users":["u"],"data":{"k":"v"}}`)
	checkResults(t, resp.Results, []Result{{User: "u", Device: "web", Node: "n2", Status: StatusDelivered}})
	if resp.Delivered != 1 || resp.Offline != 0 || resp.Failed != 0 {
		t.Fatalf("counts %+v", resp)
	}
	f := c.Next(t)
	if f["type"] != "message" || f["id"] != resp.ID || fmt.Sprint(f["data"]) != "map[k:v]" {
		t.Fatalf("client got %v, want message %s", f, resp.ID)
	}
	if called, err := calls.called("n2"); !called || err != nil {
		t.Fatalf("OnForward for n2: called %v, err %v", called, err)
	}

	// The owner has no session of u on device "app": offline, as it said.
	resp = sendResult(t, n1, `{"users":["u"],"device":"app","data":2}`)
	checkResults(t, resp.Results, []Result{{User: "u", Status: StatusOffline}})
	if resp.Offline != 1 {
		t.Fatalf("counts %+v", resp)
	}
	select {
	case b := <-c.Frames:
		t.Fatalf("client on device web got %q, sent to device app", b)
	default:
	}
}

// TestForwardReportsOwnerAnswers: each session the owner reports becomes
// one result, in the owner's order, with the owner's error text.
func TestForwardReportsOwnerAnswers(t *testing.T) {
	cases := []struct {
		name     string
		sessions []sessionResult
		want     []Result
	}{
		{"one delivered", []sessionResult{{Device: "web"}},
			[]Result{{User: "u", Device: "web", Node: "n2", Status: StatusDelivered}}},
		{"one refused", []sessionResult{{Device: "web", Error: "connection closing"}},
			[]Result{{User: "u", Device: "web", Node: "n2", Status: StatusError, Error: "connection closing"}}},
		{"two devices", []sessionResult{{Device: "web", Error: "send queue full"}, {Device: "app"}},
			[]Result{
				{User: "u", Device: "web", Node: "n2", Status: StatusError, Error: "send queue full"},
				{User: "u", Device: "app", Node: "n2", Status: StatusDelivered},
			}},
		{"no sessions there", nil, []Result{{User: "u", Status: StatusOffline}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, Config{Cluster: &fakeCluster{
				owners: map[string][]string{"u": {"n2"}},
				peers:  map[string]peer{"n2": answerEach(tc.sessions...)},
			}})
			checkResults(t, sendResult(t, s, `{"users":["u"],"data":1}`).Results, tc.want)
		})
	}
}

// TestForwardOwnerUnreachable: an owner the cluster cannot reach, that
// does not answer in time, or that gossip dropped a moment ago: its users
// are "unreachable" with the node named (not offline: the table lists
// their sessions there), counted apart, logged at Debug, and OnForward
// hears the error.
func TestForwardOwnerUnreachable(t *testing.T) {
	cases := []struct {
		name  string
		peers map[string]peer
		want  error
	}{
		{"unreachable", map[string]peer{"n2": failWith(fmt.Errorf("cluster: call n2: %w", cluster.ErrUnreachable))}, cluster.ErrUnreachable},
		{"no answer", map[string]peer{"n2": failWith(fmt.Errorf("cluster: call n2: %w", cluster.ErrNoAnswer))}, cluster.ErrNoAnswer},
		{"not a member", nil, cluster.ErrUnknownNode},
		{"cluster shut down", map[string]peer{"n2": failWith(cluster.ErrClosed)}, cluster.ErrClosed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls callLog
			s, logs := newTestServer(t, Config{
				Cluster:   &fakeCluster{owners: map[string][]string{"u": {"n2"}, "v": {"n2"}}, peers: tc.peers},
				OnForward: calls.onForward,
			})
			resp := sendResult(t, s, `{"users":["u","v"],"data":1}`)
			checkResults(t, resp.Results, []Result{{User: "u", Node: "n2", Status: StatusUnreachable}, {User: "v", Node: "n2", Status: StatusUnreachable}})
			if resp.Unreachable != 2 || resp.Offline != 0 || resp.Failed != 0 || resp.Delivered != 0 {
				t.Fatalf("counts %+v", resp)
			}
			if st := s.Stats(); st.Unreachable != 2 || st.Offline != 0 {
				t.Fatalf("stats %+v, want 2 unreachable", st)
			}
			if _, err := calls.called("n2"); !errors.Is(err, tc.want) {
				t.Fatalf("OnForward err %v, want %v", err, tc.want)
			}
			if !strings.Contains(logs.String(), `level=DEBUG msg="owner unreachable: its recipients reported unreachable" component=relay node=n2 users=2 sessions=0`) {
				t.Fatal("no debug line for the unreachable owner")
			}
		})
	}
}

// TestForwardQueueFull: a link whose queue is full refuses the call at
// once; its users get an error result naming the node, not offline.
func TestForwardQueueFull(t *testing.T) {
	s, _ := newTestServer(t, Config{Cluster: &fakeCluster{
		owners: map[string][]string{"u": {"n2"}, "v": {"n2"}},
		peers:  map[string]peer{"n2": failWith(fmt.Errorf("cluster: call n2: %w", cluster.ErrQueueFull))},
	}})
	resp := sendResult(t, s, `{"users":["u","v"],"data":1}`)
	checkResults(t, resp.Results, []Result{
		{User: "u", Node: "n2", Status: StatusError, Error: "relay queue to node n2 full"},
		{User: "v", Node: "n2", Status: StatusError, Error: "relay queue to node n2 full"},
	})
	if resp.Failed != 2 || resp.Delivered != 0 || resp.Offline != 0 {
		t.Fatalf("counts %+v", resp)
	}
}

// TestForwardMalformedReply: a reply that does not decode, or answers for
// another number of users than asked, is dropped with a warning: the
// owner's users get an error naming the node.
func TestForwardMalformedReply(t *testing.T) {
	good := (&relayReply{Users: [][]sessionResult{{{Device: "web"}}}}).append(nil)
	cases := []struct {
		name  string
		reply []byte
	}{
		{"empty", nil},
		{"garbage", []byte{0xff, 0xff, 0xff}},
		{"truncated", good[:len(good)-1]},
		{"count of 2^60", wire.AppendUvarint(nil, 1<<60)},
		{"sessions count of 2^60", wire.AppendUvarint(wire.AppendUvarint(nil, 1), 1<<60)},
		{"two users for one", (&relayReply{Users: [][]sessionResult{{{Device: "web"}}, {{Device: "app"}}}}).append(nil)},
		{"no users for one", (&relayReply{}).append(nil)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := newTestServer(t, Config{Cluster: &fakeCluster{
				owners: map[string][]string{"u": {"n2"}},
				peers:  map[string]peer{"n2": answerBytes(tc.reply)},
			}})
			checkResults(t, sendResult(t, s, `{"users":["u"],"data":1}`).Results, []Result{{User: "u", Node: "n2", Status: StatusError, Error: "malformed reply from node n2"}})
			if !strings.Contains(logs.String(), `level=WARN msg="malformed relay reply" component=relay node=n2`) {
				t.Fatal("no warning for the malformed reply")
			}
		})
	}
}

// TestHandleRelayMalformedRequest: a request that does not decode gets no
// reply (nil) and a warning naming the sender; a good one is answered.
func TestHandleRelayMalformedRequest(t *testing.T) {
	good := (&relayRequest{Device: "web", Users: []string{"u"}, Payload: []byte(`{"type":"message"}`)}).append(nil)
	cases := []struct {
		name    string
		payload []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"truncated frame", good[:len(good)-1]},
		{"no frame", good[:len(good)-len(`{"type":"message"}`)-1]},
		{"users count of 2^60", wire.AppendUvarint(wire.AppendString(nil, "web"), 1<<60)},
		{"device longer than the message", wire.AppendUvarint(nil, 1<<40)},
		{"bad varint", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := newTestServer(t, Config{})
			if reply := s.HandleRelay("n9", tc.payload); reply != nil {
				t.Fatalf("reply %q to a malformed request", reply)
			}
			if !strings.Contains(logs.String(), `level=WARN msg="malformed relay request" component=relay from=n9`) {
				t.Fatal("no warning for the malformed request")
			}
		})
	}
	s, logs := newTestServer(t, Config{})
	reply, err := decodeRelayReply(s.HandleRelay("n9", good))
	if err != nil || len(reply.Users) != 1 || len(reply.Users[0]) != 0 {
		t.Fatalf("good request: reply %+v, %v; want one user with no sessions", reply, err)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatal("a good request logged a warning")
	}
}

// TestRouteKeepsRequestOrder: with recipients here, on two other nodes
// (answering in the other order), on both, and nowhere, the results follow
// the order of the request's users; a user's local sessions come before
// remote ones. Each node is asked only for its users, in request order.
func TestRouteKeepsRequestOrder(t *testing.T) {
	n3answered := make(chan struct{})
	asked := make(chan []string, 1) // the users n2 was asked for
	n2 := func(payload []byte) ([]byte, error) {
		select {
		case <-n3answered: // answer last
		case <-time.After(waitLimit):
			return nil, errors.New("n3 was not called")
		}
		req, err := decodeRelayRequest(payload)
		if err != nil {
			return nil, err
		}
		asked <- req.Users
		return answerEach(sessionResult{Device: "n2-dev"})(payload)
	}
	n3 := func(payload []byte) ([]byte, error) {
		defer close(n3answered)
		return answerEach(sessionResult{Device: "n3-dev"})(payload)
	}
	s, _ := newTestServer(t, Config{Cluster: &fakeCluster{
		owners: map[string][]string{"r2": {"n2"}, "r3": {"n3"}, "local": {"n1"}, "both": {"n1", "n2"}},
		peers:  map[string]peer{"n2": n2, "n3": n3},
	}})
	addr := serve(t, s)
	local := connect(t, s, addr, "local", "web")
	both := connect(t, s, addr, "both", "web")

	resp := sendResult(t, s, `{"users":["r2","local","nobody","both","r3"],"data":"hi"}`)
	checkResults(t, resp.Results, []Result{
		{User: "r2", Device: "n2-dev", Node: "n2", Status: StatusDelivered},
		{User: "local", Device: "web", Node: "n1", Status: StatusDelivered},
		{User: "nobody", Status: StatusOffline},
		{User: "both", Device: "web", Node: "n1", Status: StatusDelivered},
		{User: "both", Device: "n2-dev", Node: "n2", Status: StatusDelivered},
		{User: "r3", Device: "n3-dev", Node: "n3", Status: StatusDelivered},
	})
	if resp.Delivered != 5 || resp.Offline != 1 {
		t.Fatalf("counts %+v", resp)
	}
	if got := <-asked; !slices.Equal(got, []string{"r2", "both"}) {
		t.Fatalf("n2 was asked for %q, want [r2 both]", got)
	}
	for _, c := range []*testsupport.WSClient{local, both} {
		if f := c.Next(t); f["id"] != resp.ID || f["data"] != "hi" {
			t.Fatalf("local client got %v", f)
		}
	}
}

// TestStatsCountResults: Stats adds up /send calls and their results by
// status.
func TestStatsCountResults(t *testing.T) {
	s, _ := newTestServer(t, Config{Cluster: &fakeCluster{
		owners: map[string][]string{"full": {"n2"}, "away": {"n3"}},
		peers:  map[string]peer{"n2": failWith(cluster.ErrQueueFull), "n3": failWith(cluster.ErrNoAnswer)},
	}})
	connect(t, s, serve(t, s), "here", "web")
	if got := s.Stats(); got != (Stats{}) {
		t.Fatalf("stats before any send: %+v", got)
	}
	sendResult(t, s, `{"users":["here","gone","full","away"],"data":1}`)
	sendResult(t, s, `{"users":["gone"],"data":1}`)
	post(t, s, `{"users":[],"data":1}`) // refused: not counted
	want := Stats{Sends: 2, Delivered: 1, Offline: 2, Unreachable: 1, Failed: 1}
	if got := s.Stats(); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
}

// TestRouteLocalAndUnreachable: a user with a session here and one on a
// node that does not answer gets both results: delivered here, and
// unreachable on that node; the counts say so.
func TestRouteLocalAndUnreachable(t *testing.T) {
	s, _ := newTestServer(t, Config{Cluster: &fakeCluster{
		owners: map[string][]string{"both": {"n1", "n2"}},
		peers:  map[string]peer{"n2": failWith(cluster.ErrNoAnswer)},
	}})
	c := connect(t, s, serve(t, s), "both", "web")
	resp := sendResult(t, s, `{"users":["both","nobody"],"data":"hi"}`)
	checkResults(t, resp.Results, []Result{
		{User: "both", Device: "web", Node: "n1", Status: StatusDelivered},
		{User: "both", Node: "n2", Status: StatusUnreachable},
		{User: "nobody", Status: StatusOffline},
	})
	if resp.Delivered != 1 || resp.Unreachable != 1 || resp.Offline != 1 || resp.Failed != 0 {
		t.Fatalf("counts %+v", resp)
	}
	if f := c.Next(t); f["id"] != resp.ID {
		t.Fatalf("local client got %v", f)
	}
}
