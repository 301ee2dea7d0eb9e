package upstream

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"wsmesh/session"
)

// maxAnswerBytes bounds the backend's answer that is read: replies beyond
// it are not read (the batch still counts as accepted).
const maxAnswerBytes = 1 << 20

// Sign returns the Wsmesh-Signature header value of body sent at
// timestamp (Unix seconds): "v1=" and the hex HMAC-SHA256 of
// timestamp + "." + body under secret.
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// outcome is what one POST of a batch came to.
type outcome int

const (
	accepted outcome = iota // 2xx: the backend took the batch
	refused                 // 4xx: the backend will not take it, ever
	failed                  // anything else: try again
)

// deliver sends batch until the backend accepts or refuses it, or
// RetryFor passes, and tells the clients of its messages. It returns
// false if the Sender was stopped meanwhile (the batch is then dropped).
func (s *Sender) deliver(batch []*event) bool {
	body, err := encodeBatch(s.cfg.Node, batch)
	if err != nil { // cannot happen: every field marshals
		s.log.Error("encoding a batch of events failed: dropped", "events", len(batch), "err", err)
		return true
	}
	// RetryFor counts from when the batch's oldest event was queued, not
	// from its first POST: a batch that waited behind others while the
	// backend was down gets one try, not RetryFor more.
	start := batch[0].at
	for _, e := range batch[1:] {
		if e.at.Before(start) {
			start = e.at
		}
	}
	for attempt := 1; ; attempt++ {
		out, answer, why := s.post(body)
		switch out {
		case accepted:
			s.accepted(batch, answer)
			return true
		case refused:
			s.log.Warn("backend refused a batch of events: dropped, its clients told", "events", len(batch), "why", why)
			s.giveUp(batch, &s.stats.dropRefused, "refused by the backend ("+why+")")
			return true
		}
		if s.cfg.Now().Sub(start) >= s.cfg.RetryFor {
			s.log.Warn("backend unreachable for upstream.retry_for: batch dropped, its clients told",
				"events", len(batch), "attempts", attempt, "retry_for", s.cfg.RetryFor, "why", why)
			s.giveUp(batch, &s.stats.dropUnreachable, "backend unreachable for "+s.cfg.RetryFor.String())
			return true
		}
		s.stats.retried.Add(1)
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn("backend POST failed: retrying", "events", len(batch), "attempt", attempt, "why", why)
		}
		select {
		case <-time.After(backoff(attempt)):
		case <-s.stopCtx.Done():
			s.stats.dropClose.Add(uint64(len(batch)))
			return false
		}
	}
}

// post sends body once, signed. It returns the outcome, the answer's
// body (accepted), or why it failed.
func (s *Sender) post(body []byte) (outcome, []byte, string) {
	ctx, cancel := context.WithTimeout(s.stopCtx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return failed, nil, err.Error()
	}
	ts := strconv.FormatInt(s.cfg.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "wsmesh")
	req.Header.Set("Wsmesh-Timestamp", ts)
	req.Header.Set("Wsmesh-Signature", Sign(s.cfg.Secret, ts, body))
	start := time.Now()
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		s.onPost(start, "error")
		return failed, nil, err.Error()
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		s.onPost(start, "ok")
		if err != nil || len(answer) > maxAnswerBytes {
			s.log.Warn("backend's answer unreadable or over 1 MiB: batch accepted, its replies ignored", "err", err, "bytes", len(answer))
			return accepted, nil, ""
		}
		return accepted, answer, ""
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		s.onPost(start, "refused")
		return refused, nil, resp.Status
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		s.onPost(start, "error")
		return failed, nil, resp.Status + " (redirects are not followed: set upstream.url to the final URL)"
	}
	s.onPost(start, "error")
	return failed, nil, resp.Status
}

func (s *Sender) onPost(start time.Time, result string) {
	if s.cfg.OnPost != nil {
		s.cfg.OnPost(time.Since(start), result)
	}
}

// accepted counts batch sent and answers its messages' clients, in
// batch order: for each message, an ack if it has a client id, then the
// reply the answer holds for it, if any ({"replies":[{"id":"<event id>",
// "data":<JSON>}]}).
func (s *Sender) accepted(batch []*event, answer []byte) {
	replies := s.replies(batch, answer)
	for _, e := range batch {
		s.stats.sent.Add(1)
		s.stats.sentByType[typeIndex(e.Type)].Add(1)
		if e.Type != TypeMessage {
			continue
		}
		if e.ClientID != "" {
			s.cfg.Deliver(e.info.User, e.info.Session, session.AckFrame(e.ClientID))
		}
		if data := replies[e.ID]; data != nil {
			s.cfg.Deliver(e.info.User, e.info.Session, session.ReplyFrame(e.ClientID, data))
		}
	}
}

// replies reads the backend's answer: each reply's data, compacted, by
// the id of the message event it answers. An answer that is empty or not
// {"replies":[...]}, and replies to events not in the batch, are ignored
// with a warning.
func (s *Sender) replies(batch []*event, answer []byte) map[string][]byte {
	if len(bytes.TrimSpace(answer)) == 0 {
		return nil
	}
	var a struct {
		Replies []struct {
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		} `json:"replies"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		s.log.Warn("backend's answer is not {\"replies\":[...]}: replies ignored", "err", err)
		return nil
	}
	messages := make(map[string]bool, len(batch))
	for _, e := range batch {
		if e.Type == TypeMessage {
			messages[e.ID] = true
		}
	}
	out := make(map[string][]byte, len(a.Replies))
	for _, r := range a.Replies {
		var buf bytes.Buffer
		if !messages[r.ID] || len(r.Data) == 0 || json.Compact(&buf, r.Data) != nil {
			s.log.Warn("backend replied to an event not in the batch, or without data: ignored", "id", clip(r.ID))
			continue
		}
		out[r.ID] = buf.Bytes()
	}
	return out
}

// giveUp drops batch, counting it in drop, and tells each message's client
// why with an error frame.
func (s *Sender) giveUp(batch []*event, drop interface{ Add(uint64) uint64 }, reason string) {
	drop.Add(uint64(len(batch)))
	for _, e := range batch {
		if e.Type == TypeMessage {
			s.cfg.Deliver(e.info.User, e.info.Session, session.ErrorFrame("message", e.ClientID, reason))
		}
	}
}

func typeIndex(t string) int {
	switch t {
	case TypeConnect:
		return 1
	case TypeDisconnect:
		return 2
	}
	return 0
}

// clip cuts a backend-supplied string for a log line.
func clip(s string) string {
	if len(s) <= 128 {
		return s
	}
	return s[:128] + fmt.Sprintf("…(%d bytes)", len(s))
}
