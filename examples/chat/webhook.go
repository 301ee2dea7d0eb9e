package main

// The webhook: the node POSTs {"events":[...]} here, signed (README.md,
// "Upstream: events to your backend").

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// maxSkew is how far Wsmesh-Timestamp may be from this clock: an older
// request (a replay) or a newer one is refused.
const maxSkew = 5 * time.Minute

// verify checks a request's Wsmesh-Timestamp (within maxSkew of now) and
// its Wsmesh-Signature: "v1=" and the hex HMAC-SHA256, under secret, of
// the timestamp, ".", and the body's raw bytes (not re-encoded JSON).
func verify(secret []byte, h http.Header, body []byte, now time.Time) error {
	ts := h.Get("Wsmesh-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("bad Wsmesh-Timestamp %q", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > maxSkew || d < -maxSkew {
		return fmt.Errorf("Wsmesh-Timestamp %s is %s away from now", ts, d.Round(time.Second))
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := "v1=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(h.Get("Wsmesh-Signature")), []byte(want)) { // constant time
		return errors.New("bad Wsmesh-Signature")
	}
	return nil
}

// event is one event of a batch.
type event struct {
	ID         string          `json:"id"`   // stable across retries
	Type       string          `json:"type"` // message, connect, disconnect
	Time       time.Time       `json:"time"`
	Node       string          `json:"node"`
	User       string          `json:"user"`
	Device     string          `json:"device"`
	Session    string          `json:"session"`
	ClientID   string          `json:"client_id"`   // message: the client's own id
	Data       json.RawMessage `json:"data"`        // message: what the client sent
	Code       int             `json:"code"`        // disconnect: the close code
	Reason     string          `json:"reason"`      // disconnect
	DurationMS int64           `json:"duration_ms"` // disconnect: how long the session lasted
}

// reply is the answer to one message event: the node sends data to its
// client as {"type":"reply","id":"<client id>","data":...}.
type reply struct {
	ID   string `json:"id"` // the event's id
	Data any    `json:"data"`
}

// backend handles the webhook and calls the node's API.
type backend struct {
	secret          []byte
	nodeURL, apiKey string
	client          *http.Client
	seen            *seen
}

// events handles one POST of the node: 401 if its signature is wrong, else
// 200 with a reply to each message. A 4xx tells the node to drop the batch
// (its clients get an error frame); a 5xx or no answer makes it retry.
func (b *backend) events(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := verify(b.secret, r.Header, body, time.Now()); err != nil {
		log.Printf("webhook refused: %v", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var batch struct {
		Events []event `json:"events"`
	}
	if err := json.Unmarshal(body, &batch); err != nil {
		http.Error(w, `body is not {"events":[...]}: `+err.Error(), http.StatusBadRequest)
		return
	}
	// Events come in order per session; this handles them one by one.
	answer := struct {
		Replies []reply `json:"replies"`
	}{Replies: []reply{}}
	for _, e := range batch.Events {
		switch e.Type {
		case "message":
			answer.Replies = append(answer.Replies, reply{ID: e.ID, Data: b.message(r.Context(), e)})
		case "connect":
			log.Printf("%s connected: device %q, session %s, node %s", e.User, e.Device, e.Session, e.Node)
		case "disconnect":
			log.Printf("%s disconnected: session %s, code %d %q, after %s", e.User, e.Session, e.Code, e.Reason, time.Duration(e.DurationMS)*time.Millisecond)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(answer)
}

// message handles a message event once: a batch the node sends again (it
// did not get our answer) gets the same replies and relays nothing twice.
func (b *backend) message(ctx context.Context, e event) any {
	if r, ok := b.seen.get(e.ID); ok {
		return r
	}
	r := b.chat(ctx, e)
	b.seen.add(e.ID, r)
	return r
}

// chat relays {"to":"B","text":"..."} from e's user to user B, and returns
// the reply for the sender: {"delivered":N,"offline":M} or {"error":...}.
func (b *backend) chat(ctx context.Context, e event) any {
	var m struct {
		To   string `json:"to"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(e.Data, &m); err != nil || m.To == "" || m.Text == "" {
		return map[string]string{"error": `want {"to":"<user>","text":"..."}`}
	}
	res, err := b.send(ctx, m.To, map[string]string{"from": e.User, "text": m.Text})
	if err != nil {
		log.Printf("%s to %s: %v", e.User, m.To, err)
		return map[string]string{"error": "not delivered: " + err.Error()}
	}
	log.Printf("%s to %s: delivered %d, offline %d", e.User, m.To, res.Delivered, res.Offline)
	return res
}

// sendResult is the part of POST /send's answer the sender is told.
type sendResult struct {
	Delivered int `json:"delivered"`
	Offline   int `json:"offline"`
}

// send calls the node's POST /send: data to every session of user.
func (b *backend) send(ctx context.Context, user string, data any) (sendResult, error) {
	body, err := json.Marshal(map[string]any{"users": []string{user}, "data": data})
	if err != nil {
		return sendResult{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.nodeURL+"/send", bytes.NewReader(body))
	if err != nil {
		return sendResult{}, err
	}
	req.Header.Set("Authorization", "Bearer "+b.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return sendResult{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return sendResult{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return sendResult{}, fmt.Errorf("POST /send: %s %s", resp.Status, bytes.TrimSpace(raw))
	}
	var res sendResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return sendResult{}, fmt.Errorf("POST /send: %w", err)
	}
	return res, nil
}

// seen remembers the replies to the last n message events, by event id.
type seen struct {
	mu      sync.Mutex
	replies map[string]any
	ring    []string // ids, oldest overwritten first
	next    int
}

func newSeen(n int) *seen {
	return &seen{replies: make(map[string]any, n), ring: make([]string, n)}
}

func (s *seen) get(id string) (any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.replies[id]
	return r, ok
}

func (s *seen) add(id string, r any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.replies, s.ring[s.next])
	s.ring[s.next] = id
	s.next = (s.next + 1) % len(s.ring)
	s.replies[id] = r
}
