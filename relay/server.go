// Package relay joins the session hub and the cluster: it serves the HTTP API
// (POST /send, /presence, /disconnect, /publish, /broadcast, /rooms/join, /rooms/leave,
// GET /rooms/{room}, /healthz, /readyz, /cluster, /metrics,
// GET /openapi.yaml describing it (package api), and GET /ws from the hub), finds which node
// holds each recipient and hands the message to it, and answers the messages other nodes
// relay here (messages.go).
package relay

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"wsmesh/api"
	"wsmesh/cluster"
	"wsmesh/internal/httpx"
	"wsmesh/internal/realip"
	"wsmesh/session"
)

// Cluster is what relay needs of the cluster: who is this node, who are the
// members, which nodes hold a user's sessions, where a session is, and a
// call to another node. *cluster.Cluster implements it.
type Cluster interface {
	Name() string
	Members() []cluster.Member
	TableSize() int
	Owners(user string) []string
	Session(id string) (cluster.Located, bool)
	Sessions(user, device string) []cluster.Located
	RoomNodes(room string) []cluster.RoomCount
	Call(ctx context.Context, node string, payload []byte) ([]byte, error)
}

// Config configures a Server. Zero values take the defaults named.
type Config struct {
	Hub             *session.Hub            // required: local sessions, also serves GET /ws
	Cluster         Cluster                 // required
	APIKeys         []string                // default: none, the API is open
	MaxBodyBytes    int64                   // default 1 MiB
	MaxUsersPerSend int                     // default 1000
	TrustedProxies  realip.Proxies          // whose X-Forwarded-For names the client in logs
	Routes          map[string]http.Handler // more public handlers by ServeMux pattern (the demo page)
	Metrics         http.Handler            // served at GET /metrics, behind the API key; nil: none
	// OnForward, if set, hears of every call to another node: how long it
	// took and its error (nil: the node answered). It must not block.
	OnForward func(node string, took time.Duration, err error)
	// Readiness, if set, answers GET /readyz: ready, or the reasons why
	// not. nil: always ready. It must not block.
	Readiness func() (ready bool, reasons []string)
	Logger    *slog.Logger // default: slog.Default()
}

// Server is the node's HTTP API. It is an http.Handler.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
	// routes are the API's handlers by path and method (handle, mount).
	routes map[string]map[string]http.Handler
	keys   [][32]byte // sha256 of each API key, compared in constant time
	ids    idSource

	reads bodyReads // request bodies being read, for CutBodyReads

	// Running totals for Stats: /send calls answered 200, and their
	// results by status.
	sends, delivered, offline, unreachable, failed atomic.Uint64
	presence, disconnected                         atomic.Uint64 // /presence calls answered, sessions /disconnect closed
	publishes, broadcasts                          atomic.Uint64 // /publish and /broadcast calls answered 200
	fanoutItems                                    atomic.Uint64 // publish and broadcast relay items received from other nodes
}

// Stats are the API's running totals, for metrics.
type Stats struct {
	Sends        uint64 // POST /send calls answered 200
	Delivered    uint64 // results "delivered"
	Offline      uint64 // results "offline"
	Unreachable  uint64 // results "unreachable"
	Failed       uint64 // results "error"
	Presence     uint64 // POST /presence calls answered 200
	Disconnected uint64 // sessions POST /disconnect closed
	Publishes    uint64 // POST /publish calls answered 200
	Broadcasts   uint64 // POST /broadcast calls answered 200
	FanoutItems  uint64 // publish and broadcast relay items received from other nodes
}

// Stats returns the running totals.
func (s *Server) Stats() Stats {
	return Stats{Sends: s.sends.Load(), Delivered: s.delivered.Load(), Offline: s.offline.Load(), Unreachable: s.unreachable.Load(), Failed: s.failed.Load(),
		Presence: s.presence.Load(), Disconnected: s.disconnected.Load(),
		Publishes: s.publishes.Load(), Broadcasts: s.broadcasts.Load(), FanoutItems: s.fanoutItems.Load()}
}

// New validates cfg, fills defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Hub == nil || cfg.Cluster == nil {
		return nil, errors.New("relay: Config.Hub and Config.Cluster are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxUsersPerSend <= 0 {
		cfg.MaxUsersPerSend = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "relay"), mux: http.NewServeMux()}
	for _, k := range cfg.APIKeys {
		s.keys = append(s.keys, sha256.Sum256([]byte(k)))
	}
	// Any method: the hub answers all but GET with its own JSON 405.
	s.mux.Handle("/ws", cfg.Hub)
	s.handle("POST /send", s.withAPIKey(s.handleSend))
	s.handle("POST /presence", s.withAPIKey(s.handlePresence))
	s.handle("POST /disconnect", s.withAPIKey(s.handleDisconnect))
	s.handle("POST /rooms/join", s.withAPIKey(s.roomMembership(opJoin, StatusJoined)))
	s.handle("POST /rooms/leave", s.withAPIKey(s.roomMembership(opLeave, StatusLeft)))
	s.handle("POST /publish", s.withAPIKey(s.handlePublish))
	s.handle("POST /broadcast", s.withAPIKey(s.handleBroadcast))
	s.handle("GET /rooms/{room}", s.withAPIKey(s.handleRoom))
	s.handle("GET /rooms/{room}/members", s.withAPIKey(s.handleRoomMembers))
	s.handle("GET /healthz", s.public(s.handleHealthz))
	s.handle("GET /readyz", s.public(s.handleReadyz))
	s.handle("GET /cluster", s.withAPIKey(s.handleCluster))
	s.handle("GET /openapi.yaml", s.public(s.handleOpenAPI))
	if cfg.Metrics != nil {
		s.handle("GET /metrics", s.withAPIKey(func(w http.ResponseWriter, r *http.Request) error {
			cfg.Metrics.ServeHTTP(w, r)
			return nil
		}))
	}
	// The rooms named like the paths beside them: GET /rooms/join is
	// room "join".
	for _, name := range []string{"join", "leave"} {
		s.handle("GET /rooms/"+name, s.withAPIKey(func(w http.ResponseWriter, r *http.Request) error {
			r.SetPathValue("room", name)
			return s.handleRoom(w, r)
		}))
	}
	s.mount()
	for pattern, h := range cfg.Routes {
		s.mux.Handle(pattern, h)
	}
	s.mux.Handle("/", s.public(func(w http.ResponseWriter, r *http.Request) error {
		return httpErrorf(http.StatusNotFound, "no such endpoint: %s", clip(r.URL.Path))
	}))
	return s, nil
}

// handle serves pattern, "METHOD /path", with h. The patterns are
// registered with the ServeMux by mount, one handler per path that
// dispatches on the method: a method the path does not serve gets a JSON
// 405 whose Allow header names those it does. Without that, ServeMux
// would hand a wrong method to the catch-all "/" (a 404), or with no
// catch-all answer a plain-text 405 itself; and method patterns on paths
// that overlap ("GET /rooms/{room}", "POST /rooms/join") would conflict.
// A GET serves HEAD too.
func (s *Server) handle(pattern string, h http.Handler) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok || method == "" || !strings.HasPrefix(path, "/") {
		panic("relay: pattern " + strconv.Quote(pattern) + " is not \"METHOD /path\"")
	}
	if s.routes == nil {
		s.routes = map[string]map[string]http.Handler{}
	}
	if s.routes[path] == nil {
		s.routes[path] = map[string]http.Handler{}
	}
	s.routes[path][method] = h
}

// mount registers every path handle was given with the ServeMux.
func (s *Server) mount() {
	for path, byMethod := range s.routes {
		allow := slices.Sorted(maps.Keys(byMethod))
		s.mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m := r.Method
			if m == http.MethodHead && byMethod[m] == nil {
				m = http.MethodGet
			}
			if h := byMethod[m]; h != nil {
				h.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Allow", strings.Join(allow, ", "))
			s.answerError(w, r, httpErrorf(http.StatusMethodNotAllowed, "method %s not allowed; use %s", clip(r.Method), strings.Join(allow, " or ")))
		}))
	}
}

// ServeHTTP routes a request. Requests that ServeMux would answer itself,
// in plain text or with a redirect, are answered here in JSON instead.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := oddRequest(w, r); err != nil {
		s.answerError(w, r, err)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// allowedMethods are all the methods the API serves, for the Allow header
// of a 405 that no endpoint answers.
const allowedMethods = "GET, HEAD, POST"

// oddRequest refuses the requests whose answer would come from ServeMux
// itself rather than from an endpoint:
//   - CONNECT (ServeMux matches its authority-form target as a path: a
//     plain-text 404): 405, this node is not a proxy;
//   - the target "*" (a bodyless plain-text 400): 400;
//   - a path not starting with "/" (absolute-form with no path) or not clean
//     ("//send", "/send/../send": a 307 redirect to the clean path): 404,
//     naming the clean path. The API's paths are fixed, so an unclean one is
//     a client bug best seen at once, not followed as a redirect that
//     resends the body and the key.
func oddRequest(w http.ResponseWriter, r *http.Request) error {
	if r.Method == http.MethodConnect {
		w.Header().Set("Allow", allowedMethods)
		return httpErrorf(http.StatusMethodNotAllowed, "method CONNECT not allowed: this node is not a proxy")
	}
	if r.RequestURI == "*" {
		return httpErrorf(http.StatusBadRequest, `request target "*" names no endpoint`)
	}
	p := r.URL.EscapedPath()
	if p == "" || p[0] != '/' {
		return httpErrorf(http.StatusNotFound, "no such endpoint: %q (a path starts with /)", clip(p))
	}
	if c := cleanPath(p); c != p {
		return httpErrorf(http.StatusNotFound, "no such endpoint: %s (not a clean path; did you mean %s?)", clip(p), clip(c))
	}
	return nil
}

// cleanPath is ServeMux's canonical form of a path: path.Clean, keeping a
// trailing slash.
func cleanPath(p string) string {
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

// clipBytes is how much of a client-supplied string goes into a log line
// or an error answer.
const clipBytes = 256

// clip returns s cut to its first clipBytes bytes (on a UTF-8 boundary),
// followed by a marker giving its whole length, e.g. "/aaaa…(1048576 bytes)".
// Every client-supplied string logged or echoed goes through it.
func clip(s string) string {
	if len(s) <= clipBytes {
		return s
	}
	i := clipBytes
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// httpError is an error with the status it answers with.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func httpErrorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// endpointFunc is an endpoint that answers, or returns an error for the
// adapter (public, withAPIKey) to answer: an *httpError with its status,
// anything else as a 500 (answerError).
type endpointFunc func(w http.ResponseWriter, r *http.Request) error

// public serves h to anyone, answering its error with its status and
// {"error": ...}, logged.
func (s *Server) public(h endpointFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.answerError(w, r, err)
		}
	})
}

// withAPIKey serves h, as public does, to requests that carry one of the
// API keys (authorized); others get 401 with WWW-Authenticate.
func (s *Server) withAPIKey(h endpointFunc) http.Handler {
	return s.public(func(w http.ResponseWriter, r *http.Request) error {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wsmesh"`)
			return httpErrorf(http.StatusUnauthorized, "missing or wrong API key (Authorization: Bearer <key>)")
		}
		return h(w, r)
	})
}

// answerError answers err with its status and {"error": ...} and logs it:
// an *httpError at Info ("request refused"), anything else as a 500 at
// Error ("request failed", its text kept from the client).
func (s *Server) answerError(w http.ResponseWriter, r *http.Request, err error) {
	he := &httpError{}
	if !errors.As(err, &he) {
		he = &httpError{status: http.StatusInternalServerError, msg: "internal error"}
		s.log.Error("request failed", "method", clip(r.Method), "path", clip(r.URL.Path), "remote", s.cfg.TrustedProxies.ClientAddr(r), "err", err)
	} else {
		s.log.Info("request refused", "method", clip(r.Method), "path", clip(r.URL.Path), "remote", s.cfg.TrustedProxies.ClientAddr(r), "status", he.status, "error", he.msg)
	}
	httpx.WriteError(w, he.status, he.msg)
}

// authorized checks "Authorization: Bearer <key>" against every key in
// constant time. No keys configured: everyone is.
func (s *Server) authorized(r *http.Request) bool {
	if len(s.keys) == 0 {
		return true
	}
	token, isBearer := httpx.BearerToken(r)
	if !isBearer {
		return false
	}
	got := sha256.Sum256([]byte(token))
	ok := 0
	for _, k := range s.keys {
		ok |= subtle.ConstantTimeCompare(got[:], k[:])
	}
	return ok == 1
}

// handleOpenAPI answers GET /openapi.yaml with the API's OpenAPI document
// (package api), to anyone.
func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	doc := api.OpenAPI()
	w.Header().Set("Content-Type", api.ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	_, _ = w.Write(doc) // nothing to do if the client went away
	return nil
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

type readyzResponse struct {
	Status  string   `json:"status"` // "ready" or "not ready"
	Reasons []string `json:"reasons,omitempty"`
}

// handleReadyz answers 200 {"status":"ready"} when Config.Readiness says
// so, else 503 {"status":"not ready","reasons":[...]}. Never cached.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	ready, reasons := true, []string(nil)
	if s.cfg.Readiness != nil {
		ready, reasons = s.cfg.Readiness()
	}
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		if len(reasons) == 0 {
			reasons = []string{"not ready"}
		}
		httpx.WriteJSON(w, http.StatusServiceUnavailable, readyzResponse{Status: "not ready", Reasons: reasons})
		return nil
	}
	httpx.WriteJSON(w, http.StatusOK, readyzResponse{Status: "ready"})
	return nil
}

type clusterResponse struct {
	Node      string           `json:"node"`
	TableSize int              `json:"table_size"` // sessions in this node's cluster-wide table
	Members   []cluster.Member `json:"members"`
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, clusterResponse{Node: s.cfg.Cluster.Name(), TableSize: s.cfg.Cluster.TableSize(), Members: s.cfg.Cluster.Members()})
	return nil
}
