// Command backend is what a Go backend does with wsmesh: mint a client
// token, send a user a message with POST /send, and check the signature of
// an upstream webhook. Copy the functions you need.
//
//	go run ./examples/backend/go          # mint a token for USER_ID, then send USER_ID a message
//	go run ./examples/backend/go mint     # print a token for USER_ID
//	go run ./examples/backend/go send     # POST /send to USER_ID, print the answer
//	go run ./examples/backend/go verify SECRET TIMESTAMP SIGNATURE BODYFILE   # exit 0 if valid
//
// Environment: WSMESH_URL (default http://127.0.0.1:8080), WSMESH_API_KEY
// (auth.api_keys), WSMESH_JWT_SECRET (auth.jwt_secret), USER_ID.
package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// mintToken returns a client token (HS256) for user on device, valid for ttl.
// The client connects with it: ws://host:8080/ws?token=...
func mintToken(jwtSecret, user, device string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{
		"sub":    user,
		"device": device,
		"iat":    now.Unix(),
		"exp":    now.Add(ttl).Unix(), // required: wsmesh refuses a token without exp
	}
	// auth.jwt_secret is used as the raw bytes of the string (UTF-8), NOT
	// base64-decoded, even when it looks like base64.
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
}

// sendToUser posts data to every session of user with POST /send and
// returns wsmesh's answer (JSON: id, delivered, offline, ..., results).
func sendToUser(ctx context.Context, baseURL, apiKey, user string, data any) ([]byte, error) {
	body, err := json.Marshal(map[string]any{"users": []string{user}, "data": data})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/send", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST /send: %s: %s", resp.Status, bytes.TrimSpace(answer))
	}
	return answer, nil
}

// maxSkew is how far a webhook's Wsmesh-Timestamp may be from now.
const maxSkew = 5 * time.Minute

// verifySignature checks an upstream webhook: signature is its
// Wsmesh-Signature header, timestamp its Wsmesh-Timestamp header (Unix
// seconds), body the raw request body, read before any JSON decoding. The
// signature is "v1=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
// In a handler:
//
//	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
//	err = verifySignature(secret, r.Header.Get("Wsmesh-Timestamp"), r.Header.Get("Wsmesh-Signature"), body, time.Now())
func verifySignature(secret []byte, timestamp, signature string, body []byte, now time.Time) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("malformed timestamp")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > maxSkew || d < -maxSkew {
		return errors.New("timestamp more than 5 minutes from now (a replay, or a wrong clock)")
	}
	m := hmac.New(sha256.New, secret) // upstream.secret: raw string bytes too
	m.Write([]byte(timestamp + "."))
	m.Write(body)
	want := "v1=" + hex.EncodeToString(m.Sum(nil))
	if !hmac.Equal([]byte(signature), []byte(want)) { // constant time
		return errors.New("signature mismatch")
	}
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	mode := "all"
	if len(args) > 0 {
		mode = args[0]
	}
	switch {
	case mode == "verify" && len(args) == 5:
		body, err := os.ReadFile(args[4])
		if err != nil {
			return err
		}
		if err := verifySignature([]byte(args[1]), args[2], args[3], body, time.Now()); err != nil {
			return fmt.Errorf("invalid: %w", err)
		}
		fmt.Println("valid")
		return nil
	case mode != "all" && mode != "mint" && mode != "send", len(args) > 1:
		fmt.Fprintln(os.Stderr, "usage: backend [mint | send | verify SECRET TIMESTAMP SIGNATURE BODYFILE]")
		os.Exit(2)
	}

	baseURL := cmp.Or(os.Getenv("WSMESH_URL"), "http://127.0.0.1:8080")
	user, jwtSecret, apiKey := os.Getenv("USER_ID"), os.Getenv("WSMESH_JWT_SECRET"), os.Getenv("WSMESH_API_KEY")
	if user == "" {
		return errors.New("USER_ID not set")
	}
	if mode != "send" {
		if jwtSecret == "" {
			return errors.New("WSMESH_JWT_SECRET not set")
		}
		token, err := mintToken(jwtSecret, user, "web", time.Hour)
		if err != nil {
			return err
		}
		fmt.Println(token)
	}
	if mode != "mint" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		answer, err := sendToUser(ctx, baseURL, apiKey, user, map[string]string{"text": "hello from go"})
		if err != nil {
			return err
		}
		fmt.Printf("%s\n", bytes.TrimSpace(answer))
	}
	return nil
}
