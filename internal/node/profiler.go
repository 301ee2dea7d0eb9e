package node

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// profiler serves net/http/pprof on admin.listen, apart from the API.
type profiler struct {
	srv *http.Server
	ln  net.Listener
}

// listenProfiler binds addr and says so; serve starts answering.
func listenProfiler(addr string, log *slog.Logger) (*profiler, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on admin.listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	p := &profiler{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln: ln}
	log.Info("profiler serving", "admin", "http://"+ln.Addr().String()+"/debug/pprof/")
	return p, nil
}

// serve blocks until close.
func (p *profiler) serve() { _ = p.srv.Serve(p.ln) }

// close stops the profiler at once; profiles being taken are cut.
func (p *profiler) close() { _ = p.srv.Close() }
