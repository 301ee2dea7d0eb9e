package testsupport

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"wsmesh/session"
)

// Client talks to a node at an address, in this process or not: its HTTP
// API with an API key, and its WebSocket with tokens it signs.
type Client struct {
	addr, secret, apiKey string
}

// NewClient returns a client of the node serving HTTP on addr, whose
// auth.jwt_secret is secret and whose API accepts apiKey.
func NewClient(addr, secret, apiKey string) *Client {
	return &Client{addr: addr, secret: secret, apiKey: apiKey}
}

// Addr returns the node's HTTP address.
func (c *Client) Addr() string { return c.addr }

// Token returns a client token for user and device, valid for an hour.
func (c *Client) Token(tb testing.TB, user, device string) string {
	tb.Helper()
	return c.TokenTTL(tb, user, device, time.Hour)
}

// TokenTTL returns a client token for user and device, valid for ttl.
func (c *Client) TokenTTL(tb testing.TB, user, device string, ttl time.Duration) string {
	tb.Helper()
	return c.mint(tb, user, device, nil, ttl)
}

// TokenRooms returns a client token for user and device, valid for an
// hour, whose rooms claim is rooms.
func (c *Client) TokenRooms(tb testing.TB, user, device string, rooms ...string) string {
	tb.Helper()
	return c.mint(tb, user, device, rooms, time.Hour)
}

func (c *Client) mint(tb testing.TB, user, device string, rooms []string, ttl time.Duration) string {
	tb.Helper()
	a, err := session.NewAuthenticator([]byte(c.secret))
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := a.MintRooms(user, device, rooms, ttl)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// API does an HTTP request with the API key and decodes the JSON answer.
func (c *Client) API(tb testing.TB, method, path, body string) (int, map[string]any, http.Header) {
	tb.Helper()
	return c.APIAuth(tb, method, path, body, "Bearer "+c.apiKey)
}

// APIAuth is API with this Authorization header ("": none).
func (c *Client) APIAuth(tb testing.TB, method, path, body, auth string) (int, map[string]any, http.Header) {
	tb.Helper()
	resp, raw := Do(tb, method, "http://"+c.addr+path, authHeader(auth), body)
	var out map[string]any
	if method != http.MethodHead {
		if err := json.Unmarshal([]byte(raw), &out); err != nil {
			tb.Fatalf("%s %s: answer is not JSON (%v): %q", method, path, err, raw)
		}
	}
	return resp.StatusCode, out, resp.Header
}

// authHeader is a header with Authorization: auth, or none for "".
func authHeader(auth string) http.Header {
	if auth == "" {
		return nil
	}
	return http.Header{"Authorization": {auth}}
}

// Do sends method url with header and body, without following redirects,
// and returns the answer with its whole body (closed). A transport error
// fails the test.
func Do(tb testing.TB, method, url string, header http.Header, body string) (*http.Response, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	c := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	return resp, string(raw)
}

// Metrics returns the node's /metrics page.
func (c *Client) Metrics(tb testing.TB) string {
	tb.Helper()
	resp, body := Do(tb, http.MethodGet, "http://"+c.addr+"/metrics", authHeader("Bearer "+c.apiKey), "")
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	return body
}

// Send posts body to /send and checks for 200.
func (c *Client) Send(tb testing.TB, body string) map[string]any {
	tb.Helper()
	return c.PostJSON(tb, "/send", body)
}

// PostJSON posts body to path with the API key, checks for 200 and
// decodes the answer.
func (c *Client) PostJSON(tb testing.TB, path, body string) map[string]any {
	tb.Helper()
	code, out, _ := c.API(tb, http.MethodPost, path, body)
	if code != http.StatusOK {
		tb.Fatalf("POST %s %s: status %d: %v", path, body, code, out)
	}
	return out
}

// Dial opens a WebSocket to the node (DialWS).
func (c *Client) Dial(tb testing.TB, token string, o DialOpts) *WSClient {
	tb.Helper()
	return DialWS(tb, c.addr, token, o)
}

// TryDial opens a WebSocket to the node (TryDialWS).
func (c *Client) TryDial(token string, o DialOpts) (*WSClient, *http.Response, error) {
	return TryDialWS(c.addr, token, o)
}
