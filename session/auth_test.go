package session

import (
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("session-test-secret-0123456789-abcdefgh")

func newTestAuth(t *testing.T) *Authenticator {
	t.Helper()
	a, err := NewAuthenticator(testSecret)
	if err != nil {
		t.Fatalf("NewAuthenticator: %v", err)
	}
	return a
}

// sign returns claims signed with method and key.
func sign(t *testing.T, method jwt.SigningMethod, claims jwt.Claims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestNewAuthenticatorEmptySecret(t *testing.T) {
	if a, err := NewAuthenticator(nil); err == nil || a != nil {
		t.Errorf("NewAuthenticator(nil) = %v, %v; want an error", a, err)
	}
	if _, err := NewAuthenticator([]byte{}); err == nil {
		t.Error("NewAuthenticator(empty) gave no error")
	}
}

func TestMintVerifyRoundTrip(t *testing.T) {
	a := newTestAuth(t)
	tests := []struct {
		name         string
		user, device string
		want         Identity
	}{
		{"user and device", "alice", "phone", Identity{User: "alice", Device: "phone"}},
		{"default device", "bob", "", Identity{User: "bob", Device: DefaultDevice}},
		{"unicode", "zoë \"q\"", "平板", Identity{User: "zoë \"q\"", Device: "平板"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := a.Mint(tt.user, tt.device, time.Hour)
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			if strings.Count(tok, ".") != 2 {
				t.Fatalf("token %q is not a 3-part JWT", tok)
			}
			id, err := a.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.User != tt.want.User || id.Device != tt.want.Device {
				t.Errorf("Verify = %+v, want %+v", id, tt.want)
			}
			if d := time.Until(id.Expires); d < 59*time.Minute || d > time.Hour {
				t.Errorf("Verify: expires in %s, want the token's exp, an hour from now", d)
			}

			// The token carries exp = iat + ttl and sub = user.
			var c Claims
			if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
				t.Fatalf("ParseUnverified: %v", err)
			}
			if c.Subject != tt.user {
				t.Errorf("sub = %q, want %q", c.Subject, tt.user)
			}
			if c.ExpiresAt == nil || c.IssuedAt == nil {
				t.Fatalf("exp or iat missing: %+v", c.RegisteredClaims)
			}
			if d := c.ExpiresAt.Sub(c.IssuedAt.Time); d != time.Hour {
				t.Errorf("exp - iat = %s, want 1h", d)
			}
			if alg, _ := mustHeader(t, tok)["alg"].(string); alg != "HS256" {
				t.Errorf("alg = %q, want HS256", alg)
			}
		})
	}

	t.Run("other authenticator with the same secret", func(t *testing.T) {
		tok, err := a.Mint("carol", "web", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewAuthenticator(append([]byte(nil), testSecret...))
		if err != nil {
			t.Fatal(err)
		}
		if id, err := b.Verify(tok); err != nil || id.User != "carol" || id.Device != "web" {
			t.Errorf("Verify = %+v, %v", id, err)
		}
	})
}

func mustHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0])
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("header: %v", err)
	}
	return h
}

func TestMintErrors(t *testing.T) {
	a := newTestAuth(t)
	for _, tt := range []struct {
		name string
		user string
		ttl  time.Duration
	}{
		{"empty user", "", time.Hour},
		{"zero ttl", "u", 0},
		{"negative ttl", "u", -time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := a.Mint(tt.user, "d", tt.ttl); err == nil || tok != "" {
				t.Errorf("Mint = %q, %v; want an error and no token", tok, err)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	a := newTestAuth(t)
	now := time.Now()
	valid := func(c *Claims) *Claims {
		if c.Subject == "" {
			c.Subject = "alice"
		}
		return c
	}
	exp := func(d time.Duration) *jwt.NumericDate { return jwt.NewNumericDate(now.Add(d)) }

	noneToken := b64(`{"alg":"none","typ":"JWT"}`) + "." +
		b64(`{"sub":"alice","exp":`+jsonNum(now.Add(time.Hour).Unix())+`}`) + "."

	tests := []struct {
		name  string
		token string
		want  string // exact error text
	}{
		{"empty", "", "token missing"},
		{"garbage", "abc", "token malformed"},
		{"garbage three parts", "a.b.c", "token malformed"},
		{"expired",
			sign(t, jwt.SigningMethodHS256, valid(&Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: exp(-time.Hour)}}), testSecret),
			"token expired"},
		{"not valid yet",
			sign(t, jwt.SigningMethodHS256, valid(&Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: exp(2 * time.Hour), NotBefore: exp(time.Hour)}}), testSecret),
			"token not valid yet"},
		{"other secret",
			sign(t, jwt.SigningMethodHS256, valid(&Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: exp(time.Hour)}}), []byte("another-secret-0123456789-abcdefghij")),
			"token signature invalid"},
		{"alg none", noneToken, `token algorithm "none" not allowed (want HS256)`},
		{"HS512 right secret",
			sign(t, jwt.SigningMethodHS512, valid(&Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: exp(time.Hour)}}), testSecret),
			`token algorithm "HS512" not allowed (want HS256)`},
		{"HS384 right secret",
			sign(t, jwt.SigningMethodHS384, valid(&Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: exp(time.Hour)}}), testSecret),
			`token algorithm "HS384" not allowed (want HS256)`},
		{"no exp",
			sign(t, jwt.SigningMethodHS256, valid(&Claims{}), testSecret),
			"token has no exp claim"},
		{"no sub",
			sign(t, jwt.SigningMethodHS256, &Claims{Device: "d", RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: exp(time.Hour)}}, testSecret),
			"token has no sub claim"},
		// RFC 7515 §4.1.11: crit names extensions the recipient must understand.
		{"crit header", critToken(t, now), "token has critical header extensions (crit): none are supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := a.Verify(tt.token)
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", id)
			}
			if !reflect.DeepEqual(id, Identity{}) {
				t.Errorf("Verify returned identity %+v with the error", id)
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q, want %q", err, tt.want)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error %q contains the token", err)
			}
			for _, part := range strings.Split(tt.token, ".") {
				if len(part) > 8 && strings.Contains(err.Error(), part) {
					t.Errorf("error %q contains the token segment %q", err, part)
				}
			}
		})
	}
}

// critToken is a valid HS256 token whose header lists a critical extension.
func critToken(t *testing.T, now time.Time) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, &Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: "alice", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}})
	tok.Header["crit"] = []string{"exp-ext"}
	tok.Header["exp-ext"] = true
	s, err := tok.SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jsonNum(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// A token that expired a moment ago is still accepted: 5s of leeway.
func TestVerifyLeeway(t *testing.T) {
	a := newTestAuth(t)
	tok := sign(t, jwt.SigningMethodHS256, &Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   "alice",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Second)),
	}}, testSecret)
	if id, err := a.Verify(tok); err != nil || id.User != "alice" {
		t.Errorf("Verify = %+v, %v; want alice within the leeway", id, err)
	}
}

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name   string
		target string
		auth   string
		want   string
	}{
		{"query", "/ws?token=q1", "", "q1"},
		{"bearer", "/ws", "Bearer h1", "h1"},
		{"bearer lowercase", "/ws", "bearer h2", "h2"},
		{"bearer extra spaces", "/ws", "Bearer   h3  ", "h3"},
		{"query wins", "/ws?token=q2", "Bearer h4", "q2"},
		{"empty query falls back to header", "/ws?token=", "Bearer h5", "h5"},
		{"basic auth", "/ws", "Basic dXNlcjpwYXNz", ""},
		{"bearer without token", "/ws", "Bearer ", ""},
		{"bare word", "/ws", "Bearer", ""},
		{"nothing", "/ws", "", ""},
		{"other query", "/ws?tok=x", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			if got := TokenFromRequest(r); got != tt.want {
				t.Errorf("TokenFromRequest = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMessageFrame(t *testing.T) {
	tests := []struct {
		name string
		id   string
		data string
	}{
		{"object", "0190a0b0-c0d0-7000-8000-000000000001", `{"a":1,"b":[true,null],"c":{"d":"e"}}`},
		{"array", "id-2", `[1,2.5,"three",{"four":4}]`},
		{"string with unicode and quotes", "id-3", `"he said \"hi\" — zoë 日本 😀 \\ \u00e9"`},
		{"number", "id-4", `42`},
		{"bool", "id-5", `false`},
		{"empty object", "id-6", `{}`},
		{"id with quotes and unicode", `i"d\ zoë 日本 😀`, `{"k":"v"}`},
		{"empty id", "", `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.data)
			frame := MessageFrame(tt.id, data)
			if !json.Valid(frame) {
				t.Fatalf("frame is not valid JSON: %s", frame)
			}
			var keys map[string]json.RawMessage
			if err := json.Unmarshal(frame, &keys); err != nil {
				t.Fatal(err)
			}
			if len(keys) != 3 {
				t.Errorf("frame has keys %v, want exactly type, id, data", reflect.ValueOf(keys).MapKeys())
			}
			var f struct {
				Type string          `json:"type"`
				ID   string          `json:"id"`
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(frame, &f); err != nil {
				t.Fatal(err)
			}
			if f.Type != "message" {
				t.Errorf("type = %q, want message", f.Type)
			}
			if f.ID != tt.id {
				t.Errorf("id = %q, want %q", f.ID, tt.id)
			}
			if string(f.Data) != tt.data {
				t.Errorf("data = %s, want %s (copied as it is)", f.Data, tt.data)
			}
			var got, want any
			if err := json.Unmarshal(f.Data, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("data decodes to %#v, want %#v", got, want)
			}

			// The frame does not alias data.
			before := string(frame)
			for i := range data {
				data[i] = 'x'
			}
			if string(frame) != before {
				t.Errorf("changing data changed the frame: %s", frame)
			}
		})
	}
}

// MessageFrame's id must come out as a JSON string for any Go string, not
// only for UUIDs: control characters need JSON escapes, not Go ones.
func TestMessageFrameIDControlChars(t *testing.T) {
	for _, id := range []string{"a\x01b", "bell\a", "del\x7f", "nul\x00", "tab\tnl\n"} {
		t.Run(strings.ToValidUTF8(id, "?"), func(t *testing.T) {
			frame := MessageFrame(id, []byte(`1`))
			var f struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(frame, &f); err != nil {
				t.Fatalf("frame %q is not valid JSON: %v", frame, err)
			}
			if f.ID != id {
				t.Errorf("id = %q, want %q", f.ID, id)
			}
		})
	}
}

func TestParseClientFramePing(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{`{"type":"ping"}`, true},
		{`{"type":"ping","x":1}`, true},
		{`{"type":"pong"}`, false},
		{`{"type":"PING"}`, false},
		{`{"TYPE":"ping"}`, false},
		{`{"Type":"ping"}`, false},
		{`{"type":"p\u0069ng"}`, true},
		{`{"type":1}`, false},
		{`["ping"]`, false},
		{`ping`, false},
		{``, false},
	} {
		f, err := parseClientFrame([]byte(tt.in))
		if got := err == nil && f.Type == "ping"; got != tt.want {
			t.Errorf("isPing(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestVerifyIssuedInTheFuture(t *testing.T) {
	a, err := NewAuthenticator([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "u", "iat": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix(),
	}).SignedString([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(tok); err == nil || err.Error() != "token not valid yet" {
		t.Fatalf("iat an hour ahead: %v, want token not valid yet", err)
	}
}
