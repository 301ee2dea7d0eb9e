// Package relay joins the session hub and the cluster: it serves the HTTP API
// (POST /send, GET /healthz, GET /cluster, and GET /ws from the hub), finds
// which node holds each recipient and hands the message to it.
package relay

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"wsmesh/cluster"
	"wsmesh/internal/realip"
	"wsmesh/session"
)

// Cluster is what relay needs of the cluster: who is this node, who are the
// members, which nodes hold a user's sessions, and a call to another node.
// *cluster.Cluster implements it.
type Cluster interface {
	Name() string
	Members() []cluster.Member
	TableSize() int
	Owners(user string) []string
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
	Logger    *slog.Logger // default: slog.Default()
}

// Server is the node's HTTP API. It is an http.Handler.
type Server struct {
	cfg  Config
	log  *slog.Logger
	mux  *http.ServeMux
	keys [][32]byte // sha256 of each API key, compared in constant time
	ids  idSource

	reads bodyReads // request bodies being read, for CutBodyReads

	sends   atomic.Uint64
	results [3]atomic.Uint64 // by status: delivered, offline, error
}

// Stats are the API's running totals, for metrics.
type Stats struct {
	Sends     uint64 // POST /send calls answered 200
	Delivered uint64 // results "delivered"
	Offline   uint64 // results "offline"
	Failed    uint64 // results "error"
}

// Stats returns the running totals.
func (s *Server) Stats() Stats {
	return Stats{Sends: s.sends.Load(), Delivered: s.results[0].Load(), Offline: s.results[1].Load(), Failed: s.results[2].Load()}
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
	s.mux.Handle("/ws", cfg.Hub)
	s.mux.Handle("/send", s.endpoint(http.MethodPost, true, s.handleSend))
	s.mux.Handle("/healthz", s.endpoint(http.MethodGet, false, s.handleHealthz))
	s.mux.Handle("/cluster", s.endpoint(http.MethodGet, true, s.handleCluster))
	if cfg.Metrics != nil {
		s.mux.Handle("/metrics", s.endpoint(http.MethodGet, true, func(w http.ResponseWriter, r *http.Request) error {
			cfg.Metrics.ServeHTTP(w, r)
			return nil
		}))
	}
	for pattern, h := range cfg.Routes {
		s.mux.Handle(pattern, h)
	}
	s.mux.Handle("/", s.endpoint("", false, func(w http.ResponseWriter, r *http.Request) error {
		return httpErrorf(http.StatusNotFound, "no such endpoint: %s", clip(r.URL.Path))
	}))
	return s, nil
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

// endpoint adapts a handler that returns an error: it checks the method
// (405 with Allow) and the API key (401), and answers an error with its
// status and {"error": ...}, logging it.
func (s *Server) endpoint(method string, needKey bool, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		switch {
		case method != "" && r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead):
			w.Header().Set("Allow", method)
			err = httpErrorf(http.StatusMethodNotAllowed, "method %s not allowed; use %s", clip(r.Method), method)
		case needKey && !s.authorized(r):
			w.Header().Set("WWW-Authenticate", `Bearer realm="wsmesh"`)
			err = httpErrorf(http.StatusUnauthorized, "missing or wrong API key (Authorization: Bearer <key>)")
		default:
			err = h(w, r)
		}
		if err != nil {
			s.answerError(w, r, err)
		}
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
	writeJSON(w, he.status, map[string]string{"error": he.msg})
}

// authorized checks "Authorization: Bearer <key>" against every key in
// constant time. No keys configured: everyone is.
func (s *Server) authorized(r *http.Request) bool {
	if len(s.keys) == 0 {
		return true
	}
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(h[7:])))
	ok := 0
	for _, k := range s.keys {
		ok |= subtle.ConstantTimeCompare(got[:], k[:])
	}
	return ok == 1
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

type clusterResponse struct {
	Node      string           `json:"node"`
	TableSize int              `json:"table_size"` // sessions in this node's cluster-wide table
	Members   []cluster.Member `json:"members"`
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, clusterResponse{Node: s.cfg.Cluster.Name(), TableSize: s.cfg.Cluster.TableSize(), Members: s.cfg.Cluster.Members()})
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
