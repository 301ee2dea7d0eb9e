package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// bodyReads are the request bodies being read, each by its request's
// ResponseController, so that shutdown can bound them (CutBodyReads).
type bodyReads struct {
	mu       sync.Mutex
	cut      bool      // CutBodyReads was called
	deadline time.Time // when cut: every body must have arrived by then
	live     map[*http.ResponseController]struct{}
}

// errShuttingDown answers a body read that did not end by the deadline
// shutdown set.
var errShuttingDown = &httpError{status: http.StatusServiceUnavailable, msg: "node shutting down: request body not received in time"}

// CutBodyReads is called when shutdown begins. Every request body being
// read, or whose read starts later, must then arrive within grace: its read
// deadline is set to now+grace, and a read that passes it answers 503. A
// body on its way (the rest of a request already being handled) still
// makes it; a stalled one no longer holds shutdown for its whole timeout.
// It does not block, and it is safe to call twice: the first deadline stays.
func (s *Server) CutBodyReads(grace time.Duration) {
	s.reads.mu.Lock()
	defer s.reads.mu.Unlock()
	if s.reads.cut {
		return
	}
	s.reads.cut, s.reads.deadline = true, time.Now().Add(grace)
	for rc := range s.reads.live {
		_ = rc.SetReadDeadline(s.reads.deadline) // ErrNotSupported: not a connection (tests' recorders)
	}
}

// readBody reads r's whole body, at most Config.MaxBodyBytes (413 above).
// A read cut by the server's ReadTimeout answers 408, one past the
// deadline CutBodyReads set 503.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	rc := http.NewResponseController(w)
	s.reads.mu.Lock()
	if s.reads.cut {
		if !time.Now().Before(s.reads.deadline) {
			s.reads.mu.Unlock()
			w.Header().Set("Connection", "close")
			return nil, errShuttingDown
		}
		_ = rc.SetReadDeadline(s.reads.deadline)
	}
	if s.reads.live == nil {
		s.reads.live = map[*http.ResponseController]struct{}{}
	}
	s.reads.live[rc] = struct{}{}
	s.reads.mu.Unlock()

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))

	s.reads.mu.Lock()
	delete(s.reads.live, rc)
	cut := s.reads.cut
	s.reads.mu.Unlock()

	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &mbe):
		return nil, decodeError(err, s.cfg.MaxBodyBytes)
	case errors.Is(err, os.ErrDeadlineExceeded):
		w.Header().Set("Connection", "close")
		if cut {
			return nil, errShuttingDown
		}
		return nil, httpErrorf(http.StatusRequestTimeout, "request body not received in time (http.read_timeout)")
	}
	// The client went away mid-body (or sent a broken chunked encoding):
	// it will not read the answer, but the log says why.
	w.Header().Set("Connection", "close")
	return nil, httpErrorf(http.StatusBadRequest, "request body not received: %s", clip(err.Error()))
}

// decodeObject decodes body, which must be valid UTF-8 holding exactly one
// JSON object, into fields: each key must name one of fields exactly
// (case-sensitive, unlike encoding/json), at most once, and its value is
// decoded into the pointer fields[key]. Keys absent leave their targets as
// they are; values are not checked beyond their Go types (json.RawMessage
// keeps one raw). Every error is an *httpError with status 400.
func decodeObject(body []byte, fields map[string]any) error {
	if i := firstInvalidUTF8(body); i >= 0 {
		return httpErrorf(http.StatusBadRequest, "body is not valid UTF-8 (first bad byte at offset %d)", i)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return decodeError(err, 0)
	}
	if tok != json.Delim('{') {
		return httpErrorf(http.StatusBadRequest, "malformed JSON: the body must be a JSON object (got a JSON %s)", tokenKind(tok))
	}
	// Inside the object, the end of the body is a truncation.
	truncated := func(err error) error {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return decodeError(err, 0)
	}
	seen := make(map[string]bool, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return truncated(err)
		}
		key := tok.(string) // Token checks that an object key is a string
		target, ok := fields[key]
		if !ok {
			for name := range fields {
				if strings.EqualFold(name, key) {
					return httpErrorf(http.StatusBadRequest, "malformed JSON: unknown field %q (field names are case-sensitive: did you mean %q?)", clip(key), name)
				}
			}
			return httpErrorf(http.StatusBadRequest, "malformed JSON: unknown field %q", clip(key))
		}
		if seen[key] {
			return httpErrorf(http.StatusBadRequest, "duplicate field %q", key)
		}
		seen[key] = true
		if err := dec.Decode(target); err != nil {
			var ute *json.UnmarshalTypeError
			if errors.As(err, &ute) {
				return wrongType(key, reflect.TypeOf(target).Elem(), ute)
			}
			return truncated(err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return truncated(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return httpErrorf(http.StatusBadRequest, "malformed JSON: unexpected data after the body's object")
	}
	return nil
}

// wrongType answers a field whose JSON value is of another kind than its
// Go type: 400 naming the field, what it must be and what it got.
func wrongType(key string, want reflect.Type, ute *json.UnmarshalTypeError) error {
	for want.Kind() == reflect.Pointer { // a *[]string: absent and null tell apart from []
		want = want.Elem()
	}
	if want.Kind() == reflect.Slice && ute.Type == want.Elem() {
		return httpErrorf(http.StatusBadRequest, "wrong type: %q must be %s, but an element is a JSON %s", clip(key), typeName(want), clip(ute.Value))
	}
	return httpErrorf(http.StatusBadRequest, "wrong type: %q must be %s, got a JSON %s", clip(key), typeName(want), clip(ute.Value))
}

// typeName says in JSON words what a field of Go type t holds.
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(typeName(t.Elem()), "a "), "an ") + "s"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "another kind of JSON value"
}

// tokenKind names the kind of JSON value a json.Token starts.
func tokenKind(tok json.Token) string {
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '[' {
			return "array"
		}
		return "object"
	case string:
		return "string"
	case float64, json.Number:
		return "number"
	case bool:
		return "boolean"
	}
	return "null"
}

// firstInvalidUTF8 returns the offset of b's first byte that is not part
// of a valid UTF-8 sequence, or -1 if b is valid UTF-8.
func firstInvalidUTF8(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}
