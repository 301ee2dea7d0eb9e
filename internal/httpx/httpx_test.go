package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWriteError(t *testing.T) {
	cases := []struct {
		name, msg, body string
	}{
		{"plain", "no such endpoint: /nope", `{"error":"no such endpoint: /nope"}` + "\n"},
		// Readable: HTML characters are not escaped (the answer is JSON,
		// never HTML); invalid UTF-8 replaced.
		{"html kept", `missing or wrong API key (Authorization: Bearer <key>) & more`, `{"error":"missing or wrong API key (Authorization: Bearer <key>) & more"}` + "\n"},
		{"invalid utf-8", "a\xffb", `{"error":"a\ufffdb"}` + "\n"},
		{"empty", "", `{"error":""}` + "\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			w.Header().Set("Allow", "POST")
			WriteError(w, http.StatusMethodNotAllowed, tc.msg)
			if w.Code != http.StatusMethodNotAllowed {
				t.Fatalf("status %d", w.Code)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			if got := w.Header().Get("Allow"); got != "POST" {
				t.Fatalf("a header set before was lost: Allow %q", got)
			}
			if got := w.Body.String(); got != tc.body {
				t.Fatalf("body %q\nwant %q", got, tc.body)
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	w := httptest.NewRecorder()
	WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "n": 1})
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q", w.Code, w.Header().Get("Content-Type"))
	}
	if got, want := w.Body.String(), `{"n":1,"status":"ok"}`+"\n"; got != want {
		t.Fatalf("body %q, want %q", got, want)
	}
	var v map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
}

func TestBearerToken(t *testing.T) {
	cases := []struct {
		name   string
		header []string // Authorization values; none: no header
		token  string
		ok     bool
	}{
		{"none", nil, "", false},
		{"bearer", []string{"Bearer k1"}, "k1", true},
		{"lower case", []string{"bearer k1"}, "k1", true},
		{"upper case", []string{"BEARER k1"}, "k1", true},
		{"padded", []string{"Bearer   k1 \t"}, "k1", true},
		{"scheme only", []string{"Bearer "}, "", true},
		{"scheme only, padded", []string{"Bearer    "}, "", true},
		{"no space", []string{"Bearer"}, "", false},
		{"tab for space", []string{"Bearer\tk1"}, "", false},
		{"basic", []string{"Basic azE6"}, "", false},
		{"token with spaces", []string{"Bearer a b"}, "a b", true},
		{"empty header", []string{""}, "", false},
		{"first of two", []string{"Bearer k1", "Bearer k2"}, "k1", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for _, v := range tc.header {
				r.Header.Add("Authorization", v)
			}
			token, ok := BearerToken(r)
			if token != tc.token || ok != tc.ok {
				t.Fatalf("BearerToken = %q, %v; want %q, %v", token, ok, tc.token, tc.ok)
			}
		})
	}
}
