package relay

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeSend checks that decodeSend never panics and either returns a
// request fit to deliver or refuses the body with a 400 or a 413.
func FuzzDecodeSend(f *testing.F) {
	for _, body := range []string{
		// Valid.
		`{"users":["42"],"data":1}`,
		`{"users":["42","7","42"],"device":"web","data":{"hello":"world"}}`,
		`{"data":[1,"two",{"3":null}],"users":["ü"]}`,
		` {"users" : [ "a" ] , "data" : "x" } ` + "\n",
		`{"us\u0065rs":["a"],"data":"\ud83d\ude00"}`,
		`{"users":["\ud800"],"data":"lone surrogate, escaped"}`,
		// Case-folded, unknown and duplicate fields.
		`{"USERS":["42"],"Data":1}`,
		`{"users":["42"],"data":1,"DEVICE":"x"}`,
		`{"users":["42"],"users":["7"],"data":1}`,
		`{"users":["42"],"data":1,"data":2}`,
		`{"users":["42"],"data":{"a":1,"a":2,"USERS":3}}`,
		`{"":1}`,
		// Invalid UTF-8.
		"{\"users\":[\"42\"],\"data\":\"\xff\"}",
		"{\"users\":[\"4\xc0\xaf\"],\"data\":1}",
		"{\"users\":[\"42\"],\"data\":\"\xed\xa0\x80\"}",
		"{\"users\":[\"42\"],\"data\":1}\xff",
		// Trailing data, truncation.
		`{"users":["42"],"data":1} {}`,
		`{"users":["42"],"data":1}]`,
		`{"users":["42"],"data":1`,
		`{"users":["42"],"data":`,
		`{`,
		``,
		// Wrong types, null, empty.
		`{"users":"42","data":1}`,
		`{"users":[42],"data":1}`,
		`{"users":["42"],"device":1,"data":1}`,
		`{"users":[],"data":1}`,
		`{"users":[""],"data":1}`,
		`{"users":["42"],"data":null}`,
		`{"users":null,"data":null}`,
		`[{"users":["42"],"data":1}]`,
		`null`,
		// Too many users (the fuzz server allows 8).
		`{"users":["1","2","3","4","5","6","7","8","9"],"data":1}`,
		// Deep nesting, huge numbers.
		`{"users":["42"],"data":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
		`{"users":["42"],"data":` + strings.Repeat(`{"a":`, 500) + "1" + strings.Repeat("}", 500) + `}`,
		`{"users":["42"],"data":1e999999999}`,
		`{"users":["42"],"data":-0.000000000000000000000000000001e-400}`,
		`{"users":` + strings.Repeat("9", 300) + `,"data":1}`,
		// Over the size limit (the fuzz server allows 4096 bytes).
		`{"users":["42"],"data":"` + strings.Repeat("x", 5000) + `"}`,
	} {
		f.Add([]byte(body))
	}
	s, _ := newTestServer(f, Config{MaxBodyBytes: 4096, MaxUsersPerSend: 8, Logger: slog.New(slog.DiscardHandler)})
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/send", strings.NewReader(string(body)))
		req, err := s.decodeSend(w, r)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || (he.status != http.StatusBadRequest && he.status != http.StatusRequestEntityTooLarge) {
				t.Fatalf("%q: error %v (%T), want an *httpError with 400 or 413", body, err, err)
			}
			if req != nil {
				t.Fatalf("%q: both a request and an error", body)
			}
			return
		}
		if n := len(req.Users); n == 0 || n > 8 {
			t.Fatalf("%q: %d users", body, n)
		}
		for i, u := range req.Users {
			if u == "" || !utf8.ValidString(u) {
				t.Fatalf("%q: users[%d] = %q", body, i, u)
			}
		}
		if !utf8.ValidString(req.Device) {
			t.Fatalf("%q: device %q", body, req.Device)
		}
		if len(req.Data) == 0 || !json.Valid(req.Data) || !utf8.Valid(req.Data) || string(req.Data) == "null" {
			t.Fatalf("%q: data %q", body, req.Data)
		}
		if !utf8.Valid(body) || len(body) > 4096 {
			t.Fatalf("%q: accepted", body)
		}
	})
}
