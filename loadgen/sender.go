package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// sendTimeout bounds one POST /send or /publish.
const sendTimeout = 30 * time.Second

// sender makes the POST /send calls (or, with a room, the POST /publish
// calls) and keeps what their answers said.
type sender struct {
	client     *http.Client
	urls       []string // http://host:port/send or /publish, round robin
	apiKey     string
	room       string   // "": /send
	roomJSON   string   // room, JSON-quoted
	users      []string // JSON-quoted user ids
	recipients int
	payload    int
	pad        string

	delivered seqCounts // per sequence number: results "delivered"

	issued                              atomic.Int64 // sequence numbers handed out
	started, ok, httpErrs, transportErr atomic.Int64
	cancelled                           atomic.Int64 // in flight when the run was interrupted
	resDelivered, resOffline, resFailed atomic.Int64
	resUnreachable                      atomic.Int64   // /send: sessions; /publish: nodes; "unreachable"
	okVia                               []atomic.Int64 // calls answered 200, per entry in urls
	lastDone                            atomic.Int64   // unix ns of the last answer
	reqHist                             *Histogram     // time of a /send call

	mu       sync.Mutex
	statuses map[int]int64
	errs     []string
}

func newSender(nodes []string, apiKey string, users, recipients, payload, senders int) *sender {
	s := &sender{
		client: &http.Client{
			Timeout: sendTimeout,
			Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				MaxIdleConnsPerHost: senders,
				DisableCompression:  true,
				IdleConnTimeout:     time.Minute,
			},
		},
		apiKey:     apiKey,
		recipients: recipients,
		payload:    payload,
		pad:        strings.Repeat("x", payload),
		reqHist:    NewHistogram(),
		statuses:   map[int]int64{},
	}
	for _, n := range nodes {
		s.urls = append(s.urls, "http://"+n+"/send")
	}
	s.okVia = make([]atomic.Int64, len(nodes))
	s.users = make([]string, users)
	for i := range s.users {
		s.users[i] = strconv.Quote(userID(i))
	}
	return s
}

// newPublisher is a sender that calls POST /publish into room, with the
// same data as /send's.
func newPublisher(nodes []string, apiKey, room string, payload, publishers int) *sender {
	s := newSender(nodes, apiKey, 0, 0, payload, publishers)
	s.room, s.roomJSON = room, strconv.Quote(room)
	for i, n := range nodes {
		s.urls[i] = "http://" + n + "/publish"
	}
	return s
}

func userID(i int) string { return "u" + strconv.Itoa(i) }

func (s *sender) close() { s.client.CloseIdleConnections() }

// data returns the message data for seq: {"t":<unix ns>,"s":<seq>,"p":"x..."},
// padded to s.payload bytes when that is more than the fields take.
func (s *sender) data(b []byte, seq, now int64) []byte {
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, now, 10)
	b = append(b, `,"s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"p":"`...)
	// what is written so far, plus the closing `"}`
	if n := s.payload - (len(b) + 2); n > 0 {
		b = append(b, s.pad[:n]...)
	}
	return append(b, `"}`...)
}

// body returns the /send body for seq: recipients consecutive users, from
// seq*recipients on (round robin over the users); or, with a room, the
// /publish body.
func (s *sender) body(seq, now int64) []byte {
	if s.room != "" {
		b := make([]byte, 0, 32+len(s.roomJSON)+s.payload+64)
		b = append(b, `{"room":`...)
		b = append(b, s.roomJSON...)
		b = append(b, `,"data":`...)
		b = s.data(b, seq, now)
		return append(b, '}')
	}
	b := make([]byte, 0, 32+s.recipients*10+s.payload+64)
	b = append(b, `{"users":[`...)
	first := int(seq % int64(len(s.users)) * int64(s.recipients) % int64(len(s.users)))
	for j := range s.recipients {
		if j > 0 {
			b = append(b, ',')
		}
		b = append(b, s.users[(first+j)%len(s.users)]...)
	}
	b = append(b, `],"data":`...)
	b = s.data(b, seq, now)
	return append(b, '}')
}

// run sends until limit sends are made, until is passed, or ctx ends: at
// rate sends per second (0: as fast as senders concurrent calls allow).
// Calls in flight when until passes are answered; ctx cancels them.
func (s *sender) run(ctx context.Context, until time.Time, rate float64, senders int, limit int64) {
	var wg sync.WaitGroup
	if rate == 0 {
		for range senders {
			wg.Go(func() {
				for ctx.Err() == nil && time.Now().Before(until) {
					seq := s.issued.Add(1) - 1
					if seq >= limit {
						return
					}
					s.one(ctx, seq)
				}
			})
		}
		wg.Wait()
		return
	}
	jobs := make(chan int64)
	for range senders {
		wg.Go(func() {
			for seq := range jobs {
				s.one(ctx, seq)
			}
		})
	}
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
pace:
	for seq := int64(0); seq < limit; seq++ {
		due := start.Add(time.Duration(seq) * interval)
		if !due.Before(until) {
			break
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break pace
			}
		}
		select {
		case jobs <- seq: // blocks while every sender is busy: the rate then falls behind
			s.issued.Store(seq + 1)
		case <-ctx.Done():
			break pace
		}
	}
	close(jobs)
	wg.Wait()
}

// sendAnswer is what bench reads of a /send or /publish answer.
type sendAnswer struct {
	Delivered   int
	Offline     int // /send
	Failed      int // /send
	Unreachable int // /send: sessions; /publish: nodes named
}

// decodeAnswer reads an answer's counts. A /send answer ends with its
// per-session results, which can run to megabytes: it stops at them, and
// the caller discards the rest unread.
func decodeAnswer(r io.Reader) (sendAnswer, error) {
	var a sendAnswer
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return a, fmt.Errorf("not a JSON object (%v)", err)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return a, err
		}
		var dst any
		switch t {
		case "results":
			return a, nil
		case "delivered":
			dst = &a.Delivered
		case "offline":
			dst = &a.Offline
		case "failed":
			dst = &a.Failed
		case "unreachable": // /send: a count of sessions; /publish: a list of nodes
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return a, err
			}
			var nodes []string
			if json.Unmarshal(v, &a.Unreachable) != nil && json.Unmarshal(v, &nodes) != nil {
				return a, fmt.Errorf("unreachable: %.50s", v)
			}
			a.Unreachable = max(a.Unreachable, len(nodes))
			continue
		default:
			dst = new(json.RawMessage)
		}
		if err := dec.Decode(dst); err != nil {
			return a, fmt.Errorf("%v: %w", t, err)
		}
	}
	return a, nil
}

// one makes the /send (or /publish) call of seq.
func (s *sender) one(ctx context.Context, seq int64) {
	t0 := time.Now()
	body := s.body(seq, t0.UnixNano())
	via := seq % int64(len(s.urls))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.urls[via], bytes.NewReader(body))
	if err != nil {
		s.fail(&s.transportErr, 0, err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if s.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+s.apiKey)
	}
	s.started.Add(1)
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			s.cancelled.Add(1)
			return
		}
		s.fail(&s.transportErr, 0, err.Error())
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		s.fail(&s.httpErrs, resp.StatusCode, fmt.Sprintf("status %d: %s", resp.StatusCode, bytes.TrimSpace(msg)))
		return
	}
	a, err := decodeAnswer(resp.Body)
	_, _ = io.Copy(io.Discard, resp.Body) // keep the connection reusable
	if err != nil {
		s.fail(&s.transportErr, 0, "reading the answer: "+err.Error())
		return
	}
	now := time.Now()
	s.reqHist.Record(int64(now.Sub(t0)))
	s.ok.Add(1)
	s.okVia[via].Add(1)
	if a.Delivered > 0 {
		s.delivered.add(seq, uint32(a.Delivered))
	}
	s.resDelivered.Add(int64(a.Delivered))
	s.resOffline.Add(int64(a.Offline))
	s.resFailed.Add(int64(a.Failed))
	s.resUnreachable.Add(int64(a.Unreachable))
	for {
		l := s.lastDone.Load()
		if now.UnixNano() <= l || s.lastDone.CompareAndSwap(l, now.UnixNano()) {
			break
		}
	}
}

func (s *sender) fail(counter *atomic.Int64, status int, msg string) {
	counter.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if status != 0 {
		s.statuses[status]++
	}
	if len(s.errs) < 5 {
		s.errs = append(s.errs, msg)
	}
}
