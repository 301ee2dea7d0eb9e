package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"wsmesh/config"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
)

// TestHardeningBadBodiesDeliverNothing: bodies with case-folded or
// duplicate fields, or invalid UTF-8, are refused at the entry node and
// reach no client; the recipient's connection stays up and gets the next
// valid message first.
func TestHardeningBadBodiesDeliverNothing(t *testing.T) {
	tn := nodetest.Start(t, nodetest.Config(t))
	c := tn.Dial(t, tn.Token(t, "u1", ""), testsupport.DialOpts{})
	testsupport.WaitFor(t, "session registered", func() bool { return tn.Hub().Len() == 1 })

	cases := []struct{ name, body, err string }{
		{"case-folded fields", `{"USERS":["u1"],"Data":1}`,
			`malformed JSON: unknown field "USERS" (field names are case-sensitive: did you mean "users"?)`},
		{"duplicate users", `{"users":["u2"],"users":["u1"],"data":1}`, `duplicate field "users"`},
		{"invalid UTF-8 in data", "{\"users\":[\"u1\"],\"data\":\"a\xffb\"}",
			"body is not valid UTF-8 (first bad byte at offset 25)"},
		{"invalid UTF-8 in a nested key", "{\"users\":[\"u1\"],\"data\":{\"\xc3\":1}}",
			"body is not valid UTF-8 (first bad byte at offset 25)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, hdr := tn.API(t, http.MethodPost, "/send", tc.body)
			if code != http.StatusBadRequest || out["error"] != tc.err {
				t.Fatalf("got %d %v, want 400 %q", code, out, tc.err)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	out := tn.Send(t, `{"users":["u1"],"data":"€ after"}`)
	if out["delivered"] != 1.0 {
		t.Fatalf("valid send after the refused ones: %v", out)
	}
	if f := c.Next(t); f["data"] != "€ after" {
		t.Fatalf("client got %v first, want the only valid message", f)
	}
	select {
	case <-c.Closed():
		t.Fatalf("connection closed (code %d, %q)", c.Code, c.Reason)
	default:
	}
}

// rawHTTP writes req on a new connection to tn and reads the answer.
func rawHTTP(t *testing.T, tn *nodetest.Node, req string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", tn.Addr(), testsupport.WaitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(testsupport.WaitLimit)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%.40q: no answer: %v", req, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%.40q: reading the answer: %v", req, err)
	}
	return resp, body
}

// TestHardeningRawRequests: requests that ServeMux would answer itself in
// plain text, or with a redirect, get a JSON error from the node.
func TestHardeningRawRequests(t *testing.T) {
	tn := nodetest.Start(t, nodetest.Config(t))
	auth := "Authorization: Bearer " + testsupport.APIKey + "\r\n"
	long := "/" + strings.Repeat("a", 1<<20-1)
	cases := []struct {
		name, req string
		status    int
		errHas    string
	}{
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, "not a proxy"},
		{"GET *", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, `request target "*"`},
		{"absolute-form, no path", "GET http://x HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no such endpoint"},
		{"//send", "POST //send HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 26\r\n\r\n" + `{"users":["u1"],"data":1}` + "\n", 404, "did you mean /send?"},
		{"/send/../send", "POST /send/../send HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 26\r\n\r\n" + `{"users":["u1"],"data":1}` + "\n", 404, "did you mean /send?"},
		{"1 MiB path", "GET " + long + " HTTP/1.1\r\nHost: x\r\n\r\n", 404, "…(1048576 bytes)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawHTTP(t, tn, tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %q", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q, want application/json: %q", ct, body)
			}
			var out struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(body, &out); err != nil || !strings.Contains(out.Error, tc.errHas) {
				t.Fatalf("answer %.300q, want {\"error\": ...} mentioning %q", body, tc.errHas)
			}
			if len(body) > 1024 {
				t.Fatalf("%d-byte answer", len(body))
			}
		})
	}
	// OPTIONS * is answered by net/http itself, before any handler, unless
	// http.Server.DisableGeneralOptionsHandler is set: 200 with no body is
	// not an error; any other answer must be relay's JSON.
	resp, body := rawHTTP(t, tn, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
	if !(resp.StatusCode == 200 && len(body) == 0) && resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("OPTIONS *: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// TestHardeningStalledBody: a /send whose body stops coming is answered 408
// once http.read_timeout has passed, and delivers nothing.
func TestHardeningStalledBody(t *testing.T) {
	cfg := nodetest.Config(t)
	const readTimeout = 300 * time.Millisecond
	cfg.HTTP.ReadTimeout = config.Duration(readTimeout)
	tn := nodetest.Start(t, cfg)
	c := tn.Dial(t, tn.Token(t, "u1", ""), testsupport.DialOpts{})
	testsupport.WaitFor(t, "session registered", func() bool { return tn.Hub().Len() == 1 })

	for _, part := range []string{"", `{"users":["u1"],"data":"stalled"`} {
		start := time.Now()
		resp, body := rawHTTP(t, tn, "POST /send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+testsupport.APIKey+
			"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"+part)
		took := time.Since(start)
		var out struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &out)
		if resp.StatusCode != http.StatusRequestTimeout || resp.Header.Get("Content-Type") != "application/json" ||
			out.Error != "request body not received in time (http.read_timeout)" {
			t.Fatalf("body %q: %d %q %q", part, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if took < readTimeout {
			t.Fatalf("answered after %s, before the %s read timeout", took, readTimeout)
		}
	}
	tn.Send(t, `{"users":["u1"],"data":"after"}`)
	if f := c.Next(t); f["data"] != "after" {
		t.Fatalf("client got %v first, want the only complete message", f)
	}
}
