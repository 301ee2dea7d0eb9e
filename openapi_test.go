package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"wsmesh/api"
	"wsmesh/config"
	"wsmesh/internal/node"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// TestOpenAPI checks api/openapi.yaml against running nodes: for every
// operation and every status it documents, a request that produces that
// status, whose answer must be documented for the operation (status,
// Content-Type, required headers) and whose JSON body must validate
// against the documented schema; and every status documented must have
// been produced. Requests answered 200 must validate against the
// documented request body schema too.
//
// A 3-node cluster serves most of it. Two more nodes serve what needs a
// node of its own: one with a short http.read_timeout (408), and one whose
// seed never answers (GET /readyz 503), shut down while request bodies are
// still arriving (503).
func TestOpenAPI(t *testing.T) {
	doc := loadOpenAPI(t)
	nodes := nodetest.StartCluster(t, 3, func(i int, s *nodetest.Setup) {
		s.Cfg.HTTP.MaxBodyBytes = 4096
		s.Cfg.HTTP.MaxUsersPerSend = 5
		s.Cfg.Auth.AllowedOrigins = []string{"http://app.example"}
		s.Cfg.Rooms.MaxPerSession = 1
		if i == 2 {
			s.Cfg.Session.MaxConnections = 1 // t3 holds u3's session, and refuses the next
		}
	})
	t1, t2, t3 := nodes[0], nodes[1], nodes[2]
	for _, s := range []struct {
		user string
		on   *nodetest.Node
	}{{"u1", t1}, {"u2", t2}, {"kick", t2}, {"u3", t3}} {
		s.on.Dial(t, s.on.Token(t, s.user, "web"), testsupport.DialOpts{})
		nodetest.WaitRoutable(t, nodes, s.user, s.on.Cfg.Node.Name)
	}
	sid2 := mustSession(t, nodes, "u2")

	r := &conformance{t: t, doc: doc, node: t1, covered: map[string]bool{}, client: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{},
	}}
	t.Cleanup(r.client.CloseIdleConnections)
	big := `{"users":["u1"],"data":"` + strings.Repeat("x", 5000) + `"}`

	// Messages.
	r.call(apiCall{name: "users on every node and one offline", op: "POST /send", body: `{"users":["u1","u2","u3","nobody"],"data":{"hello":"world"}}`, want: 200})
	r.call(apiCall{name: "by session", op: "POST /send", body: `{"sessions":["` + sid2 + `","gone"],"data":[1,2]}`, want: 200})
	r.call(apiCall{name: "with a device", op: "POST /send", body: `{"users":["u1"],"device":"web","data":"x"}`, want: 200})
	r.call(apiCall{name: "malformed JSON", op: "POST /send", body: `{"users":["u1"],"data":`, want: 400})
	r.call(apiCall{name: "users and sessions", op: "POST /send", body: `{"users":["u1"],"sessions":["s"],"data":1}`, want: 400})
	r.call(apiCall{name: "too many users", op: "POST /send", body: `{"users":["a","b","c","d","e","f"],"data":1}`, want: 400})
	r.call(apiCall{name: "no key", op: "POST /send", noKey: true, body: `{"users":["u1"],"data":1}`, want: 401})
	r.call(apiCall{name: "GET", op: "POST /send", method: "GET", want: 405})
	r.call(apiCall{name: "body too large", op: "POST /send", body: big, want: 413})

	// Rooms; t1's room table learns of the members on t2 and t3 shortly
	// after they join.
	r.call(apiCall{name: "three users", op: "POST /rooms/join", body: `{"room":"live:1","users":["u1","u2","u3"]}`, want: 200})
	r.call(apiCall{name: "one at its room limit", op: "POST /rooms/join", body: `{"room":"other","users":["u1"],"device":"web"}`, want: 200})
	r.call(apiCall{name: "bad room name", op: "POST /rooms/join", body: `{"room":"a b","users":["u1"]}`, want: 400})
	r.call(apiCall{name: "no key", op: "POST /rooms/join", noKey: true, body: `{"room":"r","users":["u1"]}`, want: 401})
	r.call(apiCall{name: "DELETE", op: "POST /rooms/join", method: "DELETE", want: 405})
	r.call(apiCall{name: "body too large", op: "POST /rooms/join", body: big, want: 413})
	testsupport.WaitFor(t, "t1 to count live:1's three members", func() bool {
		_, out, _ := t1.API(t, "GET", "/rooms/live:1", "")
		return out["members"] == 3.0
	})
	r.call(apiCall{name: "a room with members on three nodes", op: "GET /rooms/{room}", target: "/rooms/live:1", want: 200})
	r.call(apiCall{name: "a room with none", op: "GET /rooms/{room}", target: "/rooms/empty", want: 200})
	r.call(apiCall{name: "bad room name", op: "GET /rooms/{room}", target: "/rooms/a%20b", want: 400})
	r.call(apiCall{name: "no key", op: "GET /rooms/{room}", target: "/rooms/live:1", noKey: true, want: 401})
	r.call(apiCall{name: "POST", op: "GET /rooms/{room}", method: "POST", target: "/rooms/live:1", want: 405})
	r.call(apiCall{name: "limit 2", op: "GET /rooms/{room}/members", target: "/rooms/live:1/members?limit=2", want: 200})
	r.call(apiCall{name: "default limit", op: "GET /rooms/{room}/members", target: "/rooms/live:1/members", want: 200})
	r.call(apiCall{name: "limit 0", op: "GET /rooms/{room}/members", target: "/rooms/live:1/members?limit=0", want: 400})
	r.call(apiCall{name: "no key", op: "GET /rooms/{room}/members", target: "/rooms/live:1/members", noKey: true, want: 401})
	r.call(apiCall{name: "POST", op: "GET /rooms/{room}/members", method: "POST", target: "/rooms/live:1/members", want: 405})
	r.call(apiCall{name: "to three nodes", op: "POST /publish", body: `{"room":"live:1","data":{"text":"goal"}}`, want: 200})
	r.call(apiCall{name: "to a room with no members", op: "POST /publish", body: `{"room":"empty","data":1}`, want: 200})
	r.call(apiCall{name: "no data", op: "POST /publish", body: `{"room":"live:1"}`, want: 400})
	r.call(apiCall{name: "no key", op: "POST /publish", noKey: true, body: `{"room":"live:1","data":1}`, want: 401})
	r.call(apiCall{name: "GET", op: "POST /publish", method: "GET", want: 405})
	r.call(apiCall{name: "body too large", op: "POST /publish", body: big, want: 413})
	r.call(apiCall{name: "one user", op: "POST /rooms/leave", body: `{"room":"live:1","users":["u3"]}`, want: 200})
	r.call(apiCall{name: "unknown field", op: "POST /rooms/leave", body: `{"room":"live:1","user":["u3"]}`, want: 400})
	r.call(apiCall{name: "no key", op: "POST /rooms/leave", noKey: true, body: `{"room":"live:1","users":["u3"]}`, want: 401})
	r.call(apiCall{name: "PUT", op: "POST /rooms/leave", method: "PUT", want: 405})
	r.call(apiCall{name: "body too large", op: "POST /rooms/leave", body: big, want: 413})
	r.call(apiCall{name: "everyone", op: "POST /broadcast", body: `{"data":{"notice":"hi"}}`, want: 200})
	r.call(apiCall{name: "null data", op: "POST /broadcast", body: `{"data":null}`, want: 400})
	r.call(apiCall{name: "no key", op: "POST /broadcast", noKey: true, body: `{"data":1}`, want: 401})
	r.call(apiCall{name: "GET", op: "POST /broadcast", method: "GET", want: 405})
	r.call(apiCall{name: "body too large", op: "POST /broadcast", body: `{"data":"` + strings.Repeat("x", 5000) + `"}`, want: 413})

	// Sessions.
	r.call(apiCall{name: "online and offline users", op: "POST /presence", body: `{"users":["u1","u2","nobody"]}`, want: 200})
	r.call(apiCall{name: "no users", op: "POST /presence", body: `{"users":[]}`, want: 400})
	r.call(apiCall{name: "no key", op: "POST /presence", noKey: true, body: `{"users":["u1"]}`, want: 401})
	r.call(apiCall{name: "GET", op: "POST /presence", method: "GET", want: 405})
	r.call(apiCall{name: "body too large", op: "POST /presence", body: big, want: 413})
	r.call(apiCall{name: "a user on another node", op: "POST /disconnect", body: `{"users":["kick"],"reason":"bye"}`, want: 200})
	r.call(apiCall{name: "sessions", op: "POST /disconnect", body: `{"sessions":["gone"]}`, want: 200})
	r.call(apiCall{name: "reason too long", op: "POST /disconnect", body: `{"users":["u1"],"reason":"` + strings.Repeat("r", 121) + `"}`, want: 400})
	r.call(apiCall{name: "no key", op: "POST /disconnect", noKey: true, body: `{"users":["u1"]}`, want: 401})
	r.call(apiCall{name: "GET", op: "POST /disconnect", method: "GET", want: 405})
	r.call(apiCall{name: "body too large", op: "POST /disconnect", body: big, want: 413})

	// Operations.
	r.call(apiCall{name: "alive", op: "GET /healthz", want: 200})
	r.call(apiCall{name: "POST", op: "GET /healthz", method: "POST", want: 405})
	r.call(apiCall{name: "joined", op: "GET /readyz", want: 200})
	r.call(apiCall{name: "POST", op: "GET /readyz", method: "POST", want: 405})
	r.call(apiCall{name: "three members", op: "GET /cluster", want: 200})
	r.call(apiCall{name: "no key", op: "GET /cluster", noKey: true, want: 401})
	r.call(apiCall{name: "POST", op: "GET /cluster", method: "POST", want: 405})
	r.call(apiCall{name: "the text format", op: "GET /metrics", want: 200})
	r.call(apiCall{name: "no key", op: "GET /metrics", noKey: true, want: 401})
	r.call(apiCall{name: "POST", op: "GET /metrics", method: "POST", want: 405})
	r.call(apiCall{name: "this document", op: "GET /openapi.yaml", want: 200})
	r.call(apiCall{name: "POST", op: "GET /openapi.yaml", method: "POST", want: 405})

	// The WebSocket upgrade.
	r.call(apiCall{name: "upgraded", op: "GET /ws", target: "/ws?token=" + t1.Token(t, "ws", "web"), header: wsHandshake(), want: 101})
	r.call(apiCall{name: "not an upgrade", op: "GET /ws", want: 400})
	r.call(apiCall{name: "origin not allowed", op: "GET /ws", header: withHeader(wsHandshake(), "Origin", "http://evil.example"), want: 403})
	r.call(apiCall{name: "POST", op: "GET /ws", method: "POST", header: wsHandshake(), want: 405})
	r.call(apiCall{name: "version 8", op: "GET /ws", header: withHeader(wsHandshake(), "Sec-WebSocket-Version", "8"), want: 426})
	r.call(apiCall{name: "node full", node: t3, op: "GET /ws", target: "/ws?token=" + t3.Token(t, "late", "web"), header: wsHandshake(), want: 503})

	// 408: bodies that stall past a short http.read_timeout.
	slowCfg := nodetest.Config(t)
	slowCfg.Node.Name = "slow"
	slowCfg.HTTP.ReadTimeout = config.Duration(300 * time.Millisecond)
	slow := nodetest.Start(t, slowCfg)
	posts := r.operations("POST")
	stalled := make([]net.Conn, len(posts))
	for i, op := range posts {
		stalled[i] = stallBody(t, slow.Addr(), strings.TrimPrefix(op, "POST "))
	}
	for i, op := range posts {
		r.answered(op+" 408 body stalled past http.read_timeout", op, 408, stalled[i])
	}

	// 503 from a node not ready (its seed never answers), then shutting
	// down while bodies are still arriving.
	lonelyCfg := nodetest.Config(t)
	lonelyCfg.Node.Name = "lonely"
	lonelyCfg.Cluster.Seeds = []string{fmt.Sprintf("127.0.0.1:%d", testsupport.FreePort(t))}
	lonely := nodetest.StartHooks(t, lonelyCfg, node.Hooks{RejoinInterval: time.Hour})
	r.call(apiCall{name: "seed not answering", node: lonely, op: "GET /readyz", want: 503})
	for i, op := range posts {
		stalled[i] = stallBody(t, lonely.Addr(), strings.TrimPrefix(op, "POST "))
	}
	testsupport.WaitFor(t, "every stalled request in its handler", func() bool { return lonely.InFlight() == int64(len(posts)) })
	lonely.BeginStop()
	for i, op := range posts {
		r.answered(op+" 503 body stalled at shutdown", op, 503, stalled[i])
	}
	lonely.Stop(t)

	// Every status documented was produced, and answered as documented.
	for _, key := range r.documented() {
		if !r.covered[key] {
			t.Errorf("%s is documented in api/openapi.yaml but no request here produced it", key)
		}
	}
}

// TestOpenAPIServedDocument: GET /openapi.yaml serves api/openapi.yaml as
// it is in the repository, to anyone (HEAD too).
func TestOpenAPIServedDocument(t *testing.T) {
	file, err := os.ReadFile("api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, api.OpenAPI()) {
		t.Fatal("api.OpenAPI() differs from api/openapi.yaml")
	}
	tn := nodetest.Start(t, nodetest.Config(t))
	for _, method := range []string{"GET", "HEAD"} {
		resp, body := testsupport.Do(t, method, "http://"+tn.Addr()+"/openapi.yaml", nil, "")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != api.ContentType || resp.ContentLength != int64(len(file)) {
			t.Fatalf("%s /openapi.yaml: %d, Content-Type %q, Content-Length %d (want 200, %q, %d)",
				method, resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength, api.ContentType, len(file))
		}
		if want := map[string]string{"GET": string(file), "HEAD": ""}[method]; body != want {
			t.Fatalf("%s /openapi.yaml: the body is not api/openapi.yaml", method)
		}
	}
}

// TestOpenAPISchemaChecker: the test's schema checker refuses what it
// should, so that TestOpenAPI passing means something.
func TestOpenAPISchemaChecker(t *testing.T) {
	doc := loadOpenAPI(t)
	ref := func(name string) any { return map[string]any{"$ref": "#/components/schemas/" + name} }
	for _, tc := range []struct {
		schema any
		value  string
		ok     bool
	}{
		{ref("Error"), `{"error":"x"}`, true},
		{ref("Error"), `{"error":1}`, false},
		{ref("Error"), `{"error":"x","more":1}`, false},
		{ref("Error"), `{}`, false},
		{ref("Error"), `[]`, false},
		{ref("DeliveryResult"), `{"user":"u","status":"delivered"}`, true},
		{ref("DeliveryResult"), `{"user":"u","status":"joined"}`, false},
		{ref("Count"), `1`, true},
		{ref("Count"), `1.5`, false},
		{ref("Count"), `-1`, false},
		{ref("RoomName"), `"live:1"`, true},
		{ref("RoomName"), `"a b"`, false},
		{ref("UserIDs"), `[]`, false},
		{ref("UserIDs"), `[""]`, false},
		{ref("SendRequest"), `{"users":["u"],"data":0}`, true},
		{ref("SendRequest"), `{"users":["u"],"sessions":["s"],"data":0}`, false},
		{ref("SendRequest"), `{"users":["u"],"data":null}`, false},
		{ref("SendRequest"), `{"data":0}`, false},
		{ref("Health"), `{"status":"ok"}`, true},
		{ref("Health"), `{"status":"ko"}`, false},
		{ref("FanoutResponse"), `{"id":"01a2062b-1f19-7000-b891-1edb6a36ddbf","delivered":0,"nodes":[],"unreachable":[]}`, true},
		{ref("FanoutResponse"), `{"id":"n1-7","delivered":0,"nodes":[],"unreachable":[]}`, false},
		{map[string]any{"type": "string", "contains": 1}, `"x"`, false}, // a keyword the checker does not know
	} {
		var v any
		if err := json.Unmarshal([]byte(tc.value), &v); err != nil {
			t.Fatal(err)
		}
		errs := doc.validate(tc.schema, v, "$")
		if (len(errs) == 0) != tc.ok {
			t.Errorf("%v against %s: errors %q, want ok=%v", tc.schema, tc.value, errs, tc.ok)
		}
	}
}

// mustSession returns user's one session id, from the first node's table.
func mustSession(t *testing.T, nodes []*nodetest.Node, user string) string {
	t.Helper()
	ls := nodes[0].Cluster().Sessions(user, "")
	if len(ls) != 1 {
		t.Fatalf("%s has %d sessions, want 1", user, len(ls))
	}
	return ls[0].Session
}

// wsHandshake returns the headers of a good WebSocket opening handshake.
func wsHandshake() http.Header {
	return http.Header{
		"Upgrade":               {"websocket"},
		"Connection":            {"Upgrade"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}
}

// withHeader returns h with name set to value.
func withHeader(h http.Header, name, value string) http.Header {
	h.Set(name, value)
	return h
}

// stallBody opens a connection to addr and sends a POST to path whose
// body stops after its first byte; the connection is closed when the test
// ends.
func stallBody(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := fmt.Fprintf(nc, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
		path, testsupport.APIKey); err != nil {
		t.Fatal(err)
	}
	return nc
}

// apiCall is one request of the conformance test.
type apiCall struct {
	name   string         // what it is, for the subtest's name
	node   *nodetest.Node // nil: the conformance's node
	op     string         // the operation documented: "POST /send", "GET /rooms/{room}"
	method string         // "": op's method
	target string         // request URI; "": op's path
	header http.Header    // more request headers
	noKey  bool           // no API key (one is sent to operations that need one)
	body   string
	want   int // the status this request must produce
}

// conformance makes requests and checks their answers against the
// OpenAPI document, recording which documented statuses it saw.
type conformance struct {
	t       *testing.T
	doc     *openAPIDoc
	node    *nodetest.Node
	client  *http.Client
	covered map[string]bool // "POST /send 400"
}

// call makes c's request in a subtest and checks its answer.
func (r *conformance) call(c apiCall) {
	r.t.Helper()
	method, path, _ := strings.Cut(c.op, " ")
	name := fmt.Sprintf("%s %d %s", c.op, c.want, c.name)
	r.t.Run(name, func(t *testing.T) {
		n := c.node
		if n == nil {
			n = r.node
		}
		if c.method != "" {
			method = c.method
		}
		target := c.target
		if target == "" {
			target = path
		}
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		req, err := http.NewRequest(method, "http://"+n.Addr()+target, body)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range c.header {
			req.Header[k] = v
		}
		if r.doc.needsKey(c.op) && !c.noKey {
			req.Header.Set("Authorization", "Bearer "+testsupport.APIKey)
		}
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var raw []byte
		if resp.StatusCode != http.StatusSwitchingProtocols { // a WebSocket now: nothing to read
			if raw, err = io.ReadAll(resp.Body); err != nil {
				t.Fatal(err)
			}
		}
		if resp.StatusCode != c.want {
			t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.want, raw)
		}
		r.check(t, c.op, resp, raw)
		if c.want == 200 && c.body != "" {
			r.checkRequest(t, c.op, c.body)
		}
	})
}

// answered reads the answer on nc to a request of op, which must be want,
// and checks it in a subtest.
func (r *conformance) answered(name, op string, want int, nc net.Conn) {
	r.t.Helper()
	r.t.Run(name, func(t *testing.T) {
		if err := nc.SetReadDeadline(time.Now().Add(testsupport.WaitLimit)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want {
			t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, raw)
		}
		r.check(t, op, resp, raw)
	})
}

// check fails t unless op documents resp's status, with its Content-Type
// and required headers, and raw validates against its schema; if so, the
// status of op is covered.
func (r *conformance) check(t *testing.T, op string, resp *http.Response, raw []byte) {
	t.Helper()
	status := strconv.Itoa(resp.StatusCode)
	doc, ok := r.doc.response(op, status)
	if !ok {
		t.Fatalf("%s answered %s, which api/openapi.yaml does not document: %s", op, status, raw)
	}
	headers, _ := doc["headers"].(map[string]any)
	for name, h := range headers {
		if required, _ := r.doc.resolve(h)["required"].(bool); required && resp.Header.Get(name) == "" {
			t.Errorf("%s %s: no %s header, which is documented as required", op, status, name)
		}
	}
	content, _ := doc["content"].(map[string]any)
	if len(content) == 0 {
		if ct := resp.Header.Get("Content-Type"); ct != "" || len(raw) > 0 {
			t.Errorf("%s %s: documented without content, answered Content-Type %q and %d bytes", op, status, ct, len(raw))
		}
	} else {
		mediaType, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("%s %s: Content-Type %q: %v", op, status, resp.Header.Get("Content-Type"), err)
		}
		media, ok := content[mediaType].(map[string]any)
		if !ok {
			t.Fatalf("%s %s: Content-Type %q, documented: %v", op, status, mediaType, slices.Sorted(maps.Keys(content)))
		}
		switch mediaType {
		case "application/json":
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatalf("%s %s: the body is not JSON (%v): %s", op, status, err, raw)
			}
			for _, e := range r.doc.validate(media["schema"], v, "body") {
				t.Errorf("%s %s: %s\nbody: %s", op, status, e, raw)
			}
		case api.ContentType:
			if !bytes.Equal(raw, api.OpenAPI()) {
				t.Errorf("%s %s: the body is not api/openapi.yaml", op, status)
			}
		default:
			if len(raw) == 0 {
				t.Errorf("%s %s: empty %s body", op, status, mediaType)
			}
		}
	}
	if !t.Failed() {
		r.covered[op+" "+status] = true
	}
	t.Logf("%s -> %s %s", op, status, bytes.TrimSpace(raw[:min(len(raw), 600)]))
}

// checkRequest fails t unless body, which op answered 200, validates
// against op's documented request body.
func (r *conformance) checkRequest(t *testing.T, op, body string) {
	t.Helper()
	o := r.doc.operation(op)
	rb := r.doc.resolve(o["requestBody"])
	media, _ := rb["content"].(map[string]any)["application/json"].(map[string]any)
	if media == nil {
		t.Fatalf("%s takes a body, but documents no application/json request body", op)
	}
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	for _, e := range r.doc.validate(media["schema"], v, "request") {
		t.Errorf("%s: a body the node took does not match the documented request: %s\nbody: %s", op, e, body)
	}
}

// operations returns the documented operations of that method, "POST /send", sorted.
func (r *conformance) operations(method string) []string {
	var out []string
	for _, key := range r.doc.operations() {
		if strings.HasPrefix(key, method+" ") {
			out = append(out, key)
		}
	}
	return out
}

// documented returns every documented operation and status, "POST /send 400", sorted.
func (r *conformance) documented() []string {
	var out []string
	for _, op := range r.doc.operations() {
		responses, _ := r.doc.operation(op)["responses"].(map[string]any)
		for status := range responses {
			out = append(out, op+" "+status)
		}
	}
	sort.Strings(out)
	return out
}

// openAPIDoc is api/openapi.yaml, decoded as JSON would be.
type openAPIDoc struct {
	root map[string]any
}

// loadOpenAPI decodes the embedded document: YAML to generic values, then
// through JSON, so that numbers and maps have the types encoding/json
// gives the answers they are compared with.
func loadOpenAPI(tb testing.TB) *openAPIDoc {
	tb.Helper()
	var y any
	if err := yaml.Unmarshal(api.OpenAPI(), &y); err != nil {
		tb.Fatalf("api/openapi.yaml: %v", err)
	}
	j, err := json.Marshal(y)
	if err != nil {
		tb.Fatalf("api/openapi.yaml is not JSON-compatible (quote numeric keys such as \"200\"): %v", err)
	}
	d := &openAPIDoc{}
	if err := json.Unmarshal(j, &d.root); err != nil {
		tb.Fatal(err)
	}
	if v, _ := d.root["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		tb.Fatalf("api/openapi.yaml: openapi %q, want 3.1.x", v)
	}
	return d
}

// httpMethods are the operations a path item may hold.
var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operations returns every documented operation, "POST /send", sorted.
func (d *openAPIDoc) operations() []string {
	var out []string
	paths, _ := d.root["paths"].(map[string]any)
	for path, item := range paths {
		for _, m := range httpMethods {
			if _, ok := d.resolve(item)[m]; ok {
				out = append(out, strings.ToUpper(m)+" "+path)
			}
		}
	}
	sort.Strings(out)
	return out
}

// operation returns op ("POST /send"), or nil.
func (d *openAPIDoc) operation(op string) map[string]any {
	method, path, _ := strings.Cut(op, " ")
	paths, _ := d.root["paths"].(map[string]any)
	o, _ := d.resolve(paths[path])[strings.ToLower(method)].(map[string]any)
	return o
}

// response returns op's documented answer with that status.
func (d *openAPIDoc) response(op, status string) (map[string]any, bool) {
	responses, _ := d.operation(op)["responses"].(map[string]any)
	r, ok := responses[status]
	return d.resolve(r), ok
}

// needsKey reports whether op requires the API key: its security, or the
// document's, lists a requirement.
func (d *openAPIDoc) needsKey(op string) bool {
	sec, ok := d.operation(op)["security"]
	if !ok {
		sec = d.root["security"]
	}
	list, _ := sec.([]any)
	return slices.ContainsFunc(list, func(req any) bool { m, _ := req.(map[string]any); return len(m) > 0 })
}

// resolve follows v's "$ref" (a local JSON pointer) if it has one, and
// returns the object it ends at (nil if none).
func (d *openAPIDoc) resolve(v any) map[string]any {
	for range 16 {
		m, _ := v.(map[string]any)
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		v = d.pointer(ref)
	}
	return nil
}

// pointer returns the value at ref, "#/components/schemas/Error".
func (d *openAPIDoc) pointer(ref string) any {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	var v any = d.root
	for tok := range strings.SplitSeq(rest, "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, _ := v.(map[string]any)
		v = m[tok]
	}
	return v
}

// validate checks v against schema, a JSON Schema 2020-12 written with the
// keywords listed below (a keyword it does not know is an error, so that a
// schema it cannot check is never taken as checked), and returns what is
// wrong, each prefixed with where (at, "body.results[0].status").
func (d *openAPIDoc) validate(schema, v any, at string) []string {
	if b, ok := schema.(bool); ok {
		if !b {
			return []string{at + ": no value is allowed here"}
		}
		return nil
	}
	s, ok := schema.(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("%s: the schema is a JSON %T, not an object", at, schema)}
	}
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, at+": "+fmt.Sprintf(format, args...)) }
	obj, isObj := v.(map[string]any)
	arr, isArr := v.([]any)
	str, isStr := v.(string)
	num, isNum := v.(float64)
	for _, kw := range slices.Sorted(maps.Keys(s)) {
		arg := s[kw]
		switch kw {
		case "description", "title", "default", "example", "examples", "deprecated", "readOnly", "writeOnly":
		case "$ref":
			ref, _ := arg.(string)
			target := d.pointer(ref)
			if target == nil {
				fail("$ref %q leads nowhere", ref)
				continue
			}
			errs = append(errs, d.validate(target, v, at)...)
		case "type":
			types, _ := arg.([]any)
			if t, ok := arg.(string); ok {
				types = []any{t}
			}
			if !slices.ContainsFunc(types, func(t any) bool { return jsonTypeIs(v, t) }) {
				fail("a JSON %s, want %v", jsonType(v), arg)
			}
		case "const":
			if !reflect.DeepEqual(v, arg) {
				fail("%v, want %v", v, arg)
			}
		case "enum":
			list, _ := arg.([]any)
			if !slices.ContainsFunc(list, func(e any) bool { return reflect.DeepEqual(e, v) }) {
				fail("%v, want one of %v", v, list)
			}
		case "properties":
			props, _ := arg.(map[string]any)
			for _, name := range slices.Sorted(maps.Keys(props)) {
				if pv, has := obj[name]; isObj && has {
					errs = append(errs, d.validate(props[name], pv, at+"."+name)...)
				}
			}
		case "required":
			list, _ := arg.([]any)
			for _, name := range list {
				if _, has := obj[name.(string)]; isObj && !has {
					fail("no %q, which is required", name)
				}
			}
		case "additionalProperties":
			props, _ := s["properties"].(map[string]any)
			for _, name := range slices.Sorted(maps.Keys(obj)) {
				if _, known := props[name]; !known {
					if b, ok := arg.(bool); ok && !b {
						fail("%q is not a documented field", name)
					} else if !ok {
						errs = append(errs, d.validate(arg, obj[name], at+"."+name)...)
					}
				}
			}
		case "items":
			for i, e := range arr {
				errs = append(errs, d.validate(arg, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		case "minItems", "maxItems":
			if isArr && !within(kw, float64(len(arr)), arg) {
				fail("%d items, %s is %v", len(arr), kw, arg)
			}
		case "minLength", "maxLength":
			if isStr && !within(kw, float64(utf8.RuneCountInString(str)), arg) {
				fail("%d characters, %s is %v", utf8.RuneCountInString(str), kw, arg)
			}
		case "minimum", "maximum":
			if isNum && !within(kw, num, arg) {
				fail("%v, %s is %v", num, kw, arg)
			}
		case "pattern":
			p, _ := arg.(string)
			if isStr && !regexp.MustCompile(p).MatchString(str) {
				fail("%q does not match %s", str, p)
			}
		case "format":
			if isStr && !formatOK(arg, str) {
				fail("%q is not a %v", str, arg)
			}
		case "oneOf", "anyOf", "allOf":
			list, _ := arg.([]any)
			n := 0
			var sub []string
			for _, alt := range list {
				e := d.validate(alt, v, at)
				if len(e) == 0 {
					n++
				}
				sub = append(sub, e...)
			}
			switch {
			case kw == "oneOf" && n != 1:
				fail("matches %d of oneOf's %d schemas, want exactly one (%s)", n, len(list), strings.Join(sub, "; "))
			case kw == "anyOf" && n == 0:
				fail("matches none of anyOf's schemas (%s)", strings.Join(sub, "; "))
			case kw == "allOf" && n != len(list):
				errs = append(errs, sub...)
			}
		case "not":
			if len(d.validate(arg, v, at)) == 0 {
				fail("matches the schema under not: %v", arg)
			}
		default:
			fail("schema keyword %q is not known to this test's checker: teach it, or do without", kw)
		}
	}
	return errs
}

// within reports whether n keeps the bound kw ("minItems", "maximum", ...) of limit.
func within(kw string, n float64, limit any) bool {
	l, _ := limit.(float64)
	if strings.HasPrefix(kw, "min") {
		return n >= l
	}
	return n <= l
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// formatOK checks the formats the document uses; any other is an error.
func formatOK(format any, s string) bool {
	switch format {
	case "uuid":
		return uuidPattern.MatchString(s)
	case "date-time":
		_, err := time.Parse(time.RFC3339Nano, s)
		return err == nil
	}
	return false
}

// jsonType names the JSON type of v, a value from encoding/json.
func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if v == float64(int64(v)) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// jsonTypeIs reports whether v is of the JSON Schema type t (an integer is
// a number too).
func jsonTypeIs(v, t any) bool {
	got := jsonType(v)
	return got == t || (t == "number" && got == "integer")
}
