package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"wsmesh/cluster"
	"wsmesh/internal/testsupport"
	"wsmesh/session"
)

// fakeCluster is a Cluster whose session table and other nodes are given:
// Owners answers from owners, and Call hands a copy of the payload to the
// peer of that name (as a link does: the receiver owns what it gets), or
// fails with cluster.ErrUnknownNode. Set it up before the Server serves;
// peers may be called concurrently.
type fakeCluster struct {
	name   string              // this node; "" is "n1"
	owners map[string][]string // user -> the nodes holding their sessions
	peers  map[string]peer     // node -> what a call to it answers
}

// peer answers a relay call to one node.
type peer func(payload []byte) ([]byte, error)

func (c *fakeCluster) Name() string {
	if c.name == "" {
		return "n1"
	}
	return c.name
}

func (c *fakeCluster) Members() []cluster.Member   { return nil }
func (c *fakeCluster) TableSize() int              { return 0 }
func (c *fakeCluster) Owners(user string) []string { return c.owners[user] }

// Session and Sessions find nothing: the fake table holds users only.
func (c *fakeCluster) Session(string) (cluster.Located, bool)    { return cluster.Located{}, false }
func (c *fakeCluster) Sessions(string, string) []cluster.Located { return nil }
func (c *fakeCluster) RoomNodes(string) []cluster.RoomCount      { return nil }

func (c *fakeCluster) Call(_ context.Context, node string, payload []byte) ([]byte, error) {
	p, ok := c.peers[node]
	if !ok {
		return nil, fmt.Errorf("fake cluster: call %s: %w", node, cluster.ErrUnknownNode)
	}
	return p(bytes.Clone(payload))
}

// relayTo is a peer that is the Server s, called by node from.
func relayTo(s *Server, from string) peer {
	return func(payload []byte) ([]byte, error) { return s.HandleRelay(from, payload), nil }
}

// answerEach is a peer that has sessions on every user it is asked for,
// and answers sessions for each.
func answerEach(sessions ...sessionResult) peer {
	return func(payload []byte) ([]byte, error) {
		req, err := decodeRelayRequest(payload)
		if err != nil {
			return nil, err
		}
		reply := relayReply{Users: make([][]sessionResult, len(req.Users))}
		for i := range reply.Users {
			reply.Users[i] = sessions
		}
		return reply.append(nil), nil
	}
}

// failWith is a peer whose calls fail with err.
func failWith(err error) peer {
	return func([]byte) ([]byte, error) { return nil, err }
}

// answerBytes is a peer that answers every call with b.
func answerBytes(b []byte) peer {
	return func([]byte) ([]byte, error) { return bytes.Clone(b), nil }
}

// testAuth is the Authenticator of every test Server's hub.
func testAuth(tb testing.TB) *session.Authenticator {
	tb.Helper()
	auth, err := session.NewAuthenticator([]byte("relay-test-secret"))
	if err != nil {
		tb.Fatal(err)
	}
	return auth
}

// serve serves s on a loopback listener until the test ends, then shuts
// its hub down (closing the sessions clients opened), and returns the
// address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	addr := startTestHTTP(t, s, nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := s.cfg.Hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
	})
	return addr
}

// connect opens a session for user on device at addr (from serve) and
// waits until s's hub holds it.
func connect(t *testing.T, s *Server, addr, user, device string) *testsupport.WSClient {
	t.Helper()
	tok, err := testAuth(t).Mint(user, device, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	before := s.cfg.Hub.Len()
	c := testsupport.DialWS(t, addr, tok, testsupport.DialOpts{})
	waitUntil(t, user+"'s session registered", func() bool { return s.cfg.Hub.Len() > before })
	return c
}

// sendResult posts body to s's /send in process and decodes the 200 answer.
func sendResult(t *testing.T, s *Server, body string) sendResponse {
	t.Helper()
	code, out := post(t, s, body)
	if code != http.StatusOK {
		t.Fatalf("/send %s: %d %v", body, code, out)
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	var resp sendResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// callLog records which nodes a Server called, for OnForward.
type callLog struct {
	mu   sync.Mutex
	errs map[string]error
}

func (l *callLog) onForward(node string, _ time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errs == nil {
		l.errs = map[string]error{}
	}
	l.errs[node] = err
}

// called reports whether node was called, and the call's error.
func (l *callLog) called(node string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	err, ok := l.errs[node]
	return ok, err
}
