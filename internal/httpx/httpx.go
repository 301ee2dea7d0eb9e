// Package httpx holds the small HTTP pieces every part of the node answers
// with alike: a JSON answer, the JSON error body {"error": "..."}, and the
// bearer token of an Authorization header.
package httpx

import (
	"encoding/json"
	"net/http"
	"strings"
)

// WriteJSON answers status with v encoded as JSON (HTML characters not
// escaped, a trailing newline) and Content-Type
// application/json. Headers set on w before it are sent too. An encoding
// error is dropped: the status is already written.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // JSON for programs and people, not HTML: "<key>", not "\u003ckey\u003e"
	_ = enc.Encode(v)
}

// errorBody is the body of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

// WriteError answers status with {"error": msg}, as WriteJSON does.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, errorBody{Error: msg})
}

// bearerPrefix is the Authorization scheme BearerToken reads; the scheme
// name is case-insensitive (RFC 9110 §11.1).
const bearerPrefix = "bearer "

// BearerToken returns the token of r's "Authorization: Bearer <token>"
// header, with surrounding white space trimmed. ok is false when the header
// is absent or names another scheme; with ok true the token may still be
// empty ("Bearer " alone): the caller decides whether that is a valid token.
func BearerToken(r *http.Request) (token string, ok bool) {
	h := r.Header.Get("Authorization")
	if len(h) < len(bearerPrefix) || !strings.EqualFold(h[:len(bearerPrefix)], bearerPrefix) {
		return "", false
	}
	return strings.TrimSpace(h[len(bearerPrefix):]), true
}
