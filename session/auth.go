package session

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"wsmesh/internal/httpx"
)

// DefaultDevice is the device of a token that names none.
const DefaultDevice = "default"

// Identity is who a client token says the client is.
type Identity struct {
	User    string
	Device  string
	Expires time.Time // the token's exp: the session ends then (plus Leeway) unless refreshed
	Rooms   []string  // the token's rooms claim: rooms the client may join itself (roomAllowed)
}

// Leeway is how long past its exp a token is still accepted, at the
// upgrade and during a session: clocks of the token's issuer and of this
// node may differ by that much.
const Leeway = 5 * time.Second

// Claims are a client token's claims: sub is the user, device and rooms
// are optional. Each entry of rooms is a room name, or a prefix ending in
// "*" ("live:*" allows "live:42", "*" any room): the rooms the client may
// join itself with a join frame. The backend joins it to any room.
type Claims struct {
	Device string   `json:"device,omitempty"`
	Rooms  []string `json:"rooms,omitempty"`
	jwt.RegisteredClaims
}

// Authenticator mints and verifies client tokens (JWT, HS256 only).
// It is safe for concurrent use.
type Authenticator struct {
	secret []byte
	parser *jwt.Parser
}

// NewAuthenticator returns an Authenticator for tokens signed with secret.
func NewAuthenticator(secret []byte) (*Authenticator, error) {
	if len(secret) == 0 {
		return nil, errors.New("session: empty jwt secret")
	}
	return &Authenticator{
		secret: secret,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
		),
	}, nil
}

// Mint returns a token for user and device (DefaultDevice if empty) that
// expires after ttl.
func (a *Authenticator) Mint(user, device string, ttl time.Duration) (string, error) {
	return a.MintRooms(user, device, nil, ttl)
}

// MintRooms is Mint with a rooms claim: the rooms, or prefixes ending in
// "*", the client may join itself. Each entry must pass ValidRoom; none:
// the client may join no room itself.
func (a *Authenticator) MintRooms(user, device string, rooms []string, ttl time.Duration) (string, error) {
	for _, r := range rooms {
		if err := ValidRoom(r); err != nil {
			return "", fmt.Errorf("session: mint token: rooms entry %q: %w", r, err)
		}
	}
	if user == "" {
		return "", errors.New("session: mint token: empty user")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("session: mint token: ttl must be positive, got %s", ttl)
	}
	now := time.Now()
	claims := Claims{
		Device: device,
		Rooms:  rooms,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(a.secret)
	if err != nil {
		return "", fmt.Errorf("session: mint token: %w", err)
	}
	return s, nil
}

// Verify checks a token and returns its identity. The error's text is safe to
// send to the client as a close reason: it names the problem, never the token.
func (a *Authenticator) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, errors.New("token missing")
	}
	var c Claims
	t, err := a.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) { return a.secret, nil })
	switch {
	case err == nil:
		if _, ok := t.Header["crit"]; ok {
			// RFC 7515 §4.1.11: a recipient that does not understand every
			// extension crit lists must refuse the token. We know none.
			return Identity{}, errors.New("token has critical header extensions (crit): none are supported")
		}
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, errors.New("token expired")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return Identity{}, errors.New("token has no exp claim")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return Identity{}, errors.New("token not valid yet")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// Also what a wrong algorithm ("none", RS256, ...) gives.
		if alg := headerAlg(token); alg != "" && alg != jwt.SigningMethodHS256.Alg() {
			return Identity{}, fmt.Errorf("token algorithm %q not allowed (want HS256)", alg)
		}
		return Identity{}, errors.New("token signature invalid")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return Identity{}, errors.New("token malformed")
	default:
		return Identity{}, errors.New("token invalid")
	}
	if c.Subject == "" {
		return Identity{}, errors.New("token has no sub claim")
	}
	id := Identity{User: c.Subject, Device: c.Device, Expires: c.ExpiresAt.Time, Rooms: c.Rooms}
	if id.Device == "" {
		id.Device = DefaultDevice
	}
	return id, nil
}

// roomAllowed reports whether a token's rooms claim lets its client join
// room itself: an entry equal to room, or ending in "*" and a prefix of
// room without it ("*" allows every room).
func roomAllowed(claim []string, room string) bool {
	for _, p := range claim {
		if p == room {
			return true
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(room, prefix) {
			return true
		}
	}
	return false
}

// headerAlg returns the alg a token's header names, or "" if unreadable.
func headerAlg(token string) string {
	t, _, err := jwt.NewParser().ParseUnverified(token, &Claims{})
	if err != nil || t == nil {
		return ""
	}
	alg, _ := t.Header["alg"].(string)
	return alg
}

// TokenFromRequest returns the token of ?token= or of "Authorization: Bearer".
func TokenFromRequest(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	t, _ := httpx.BearerToken(r) // "" when there is none
	return t
}
