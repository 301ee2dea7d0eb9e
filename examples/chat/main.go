// Command chat is a small backend for wsmesh, standard library only, to
// copy from. It
//
//   - receives the node's upstream webhook (POST /events): client messages
//     and session events, signed with upstream.secret (webhook.go);
//   - relays a client message {"to":"B","text":"..."} to user B with the
//     node's POST /send, and replies to the sender {"delivered":N,"offline":M};
//   - serves a chat page (GET /) and client tokens for it (GET /token).
//
// Run a node that sends its events here, then this:
//
//	WSMESH_UPSTREAM_URL=http://127.0.0.1:9090/events go run .
//	go run ./examples/chat
//
// and open http://127.0.0.1:9090/ in two tabs, as two users. The defaults
// match the committed config.toml; flags (or CHAT_* variables) change them:
// go run ./examples/chat -h.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"flag"
	"html/template"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// config is what the flags set.
type config struct {
	listen    string // this backend's address
	secret    string // upstream.secret: verifies the webhook
	nodeURL   string // a node's HTTP API, for POST /send (and wsmesh.js)
	apiKey    string // one of the node's auth.api_keys
	jwtSecret string // the node's auth.jwt_secret: signs the page's tokens
	wsURL     string // where browsers open their WebSocket
}

func main() {
	var c config
	flag.StringVar(&c.listen, "listen", env("CHAT_LISTEN", "127.0.0.1:9090"), "address to serve the webhook (POST /events) and the page on (CHAT_LISTEN)")
	flag.StringVar(&c.secret, "secret", env("CHAT_UPSTREAM_SECRET", "wsmesh-sample-upstream-secret-change-me-0123456789"), "the node's upstream.secret (CHAT_UPSTREAM_SECRET)")
	flag.StringVar(&c.nodeURL, "node", env("CHAT_NODE_URL", "http://127.0.0.1:8080"), "the node's HTTP API (CHAT_NODE_URL)")
	flag.StringVar(&c.apiKey, "api-key", env("CHAT_API_KEY", "sample-api-key-change-me"), "one of the node's auth.api_keys (CHAT_API_KEY)")
	flag.StringVar(&c.jwtSecret, "jwt-secret", env("CHAT_JWT_SECRET", "wsmesh-sample-jwt-secret-change-me-0123456789"), "the node's auth.jwt_secret, to sign the page's tokens (CHAT_JWT_SECRET)")
	flag.StringVar(&c.wsURL, "ws", env("CHAT_WS_URL", ""), "the WebSocket URL browsers use (CHAT_WS_URL; default: -node with ws:// and /ws)")
	flag.Parse()
	c.nodeURL = strings.TrimSuffix(c.nodeURL, "/")
	if c.wsURL == "" {
		c.wsURL = "ws" + strings.TrimPrefix(c.nodeURL, "http") + "/ws"
	}

	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		log.Fatal(err)
	}
	// Tests wait for this line: it names the address really bound (port 0).
	log.Printf("chat example listening on http://%s (webhook: POST /events, node: %s)", ln.Addr(), c.nodeURL)
	srv := &http.Server{Handler: newServer(c), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}

// env returns the variable name, or def if it is unset or empty.
func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// newServer routes the webhook, the page, its tokens and wsmesh.js.
func newServer(c config) http.Handler {
	b := &backend{
		secret: []byte(c.secret), nodeURL: c.nodeURL, apiKey: c.apiKey,
		client: &http.Client{Timeout: 3 * time.Second}, seen: newSeen(10000),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /events", b.events)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := page.Execute(w, c.wsURL); err != nil {
			log.Printf("page: %v", err)
		}
	})
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		// A real backend hands a token only to a user it has logged in;
		// this demo trusts the name the page sends.
		user, device := r.URL.Query().Get("user"), r.URL.Query().Get("device")
		if user == "" || len(user) > 64 || len(device) > 64 {
			http.Error(w, "want ?user=NAME (1-64 bytes)&device=NAME", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, mintToken([]byte(c.jwtSecret), user, device, time.Hour))
	})
	// The page loads the client from the node (its /demo/ serves it on
	// loopback); a real app bundles its own copy of web/wsmesh.js.
	mux.HandleFunc("GET /wsmesh.js", func(w http.ResponseWriter, r *http.Request) {
		resp, err := b.client.Get(c.nodeURL + "/demo/wsmesh.js")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			http.Error(w, "the node's /demo/wsmesh.js answered "+resp.Status+" (is http.demo off?)", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		io.Copy(w, resp.Body)
	})
	return mux
}

// mintToken returns an HS256 JWT the node accepts: sub is the user, device
// the device ("": the node's "default"), valid for ttl.
func mintToken(secret []byte, user, device string, ttl time.Duration) string {
	now := time.Now()
	c := map[string]any{"sub": user, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	if device != "" {
		c["device"] = device
	}
	claims, _ := json.Marshal(c)
	enc := base64.RawURLEncoding
	msg := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

//go:embed chat.html
var pageHTML string

// page is the chat page; its one parameter is the WebSocket URL.
var page = template.Must(template.New("chat").Parse(pageHTML))
