package session

import (
	"encoding/base64"
	"net/http"
	"strings"
	"syscall"
)

// FileLimitConnections is the default MaxConnections: the process's open-file
// limit less a reserve for everything that is not a client WebSocket (the
// HTTP API and its keep-alive connections, gossip, links to other nodes,
// log files): a tenth of the limit, at least 128 and at most 10,000 files.
// So a node that is full still answers /healthz, the API and its peers.
func FileLimitConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return connectionsFor(1024)
	}
	return connectionsFor(rl.Cur)
}

func connectionsFor(files uint64) int {
	const maxInt = int(^uint(0) >> 1)
	reserve := min(max(files/10, 128), 10_000)
	if files <= 2*reserve {
		return int(max(files/2, 1))
	}
	return int(min(files-reserve, uint64(maxInt)))
}

// handshakeError is a refused WebSocket handshake: an HTTP status and why.
type handshakeError struct {
	status int
	msg    string
}

// checkHandshake checks what RFC 6455 §4.2.1 asks of an opening handshake,
// so that gws, which answers a bad one in plain text, only sees good ones.
// It may set response headers (Allow, Sec-WebSocket-Version).
func checkHandshake(w http.ResponseWriter, r *http.Request) *handshakeError {
	switch {
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", http.MethodGet)
		return &handshakeError{http.StatusMethodNotAllowed, "method " + r.Method + " not allowed; a WebSocket upgrade is a GET"}
	case !strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		return &handshakeError{http.StatusBadRequest, "websocket upgrade required (Upgrade: websocket)"}
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return &handshakeError{http.StatusBadRequest, "websocket upgrade required (Connection: Upgrade)"}
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		return &handshakeError{http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version: want 13"}
	}
	if key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(key) != 16 {
		return &handshakeError{http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64"}
	}
	return nil
}

// headerHasToken reports whether a comma-separated header lists token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
