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
	"strings"
	"sync/atomic"
	"time"

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
		return httpErrorf(http.StatusNotFound, "no such endpoint: %s", r.URL.Path)
	}))
	return s, nil
}

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

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
			err = httpErrorf(http.StatusMethodNotAllowed, "method %s not allowed; use %s", r.Method, method)
		case needKey && !s.authorized(r):
			w.Header().Set("WWW-Authenticate", `Bearer realm="wsmesh"`)
			err = httpErrorf(http.StatusUnauthorized, "missing or wrong API key (Authorization: Bearer <key>)")
		default:
			err = h(w, r)
		}
		if err == nil {
			return
		}
		he := &httpError{}
		if !errors.As(err, &he) {
			he = &httpError{status: http.StatusInternalServerError, msg: "internal error"}
			s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "remote", s.cfg.TrustedProxies.ClientAddr(r), "err", err)
		} else {
			s.log.Info("request refused", "method", r.Method, "path", r.URL.Path, "remote", s.cfg.TrustedProxies.ClientAddr(r), "status", he.status, "error", he.msg)
		}
		writeJSON(w, he.status, map[string]string{"error": he.msg})
	})
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
