package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/session"
)

// A join probe measures how soon a publish made on another node reaches a
// client that has just joined a room, in the case where that takes the
// longest: the client is the room's first member on its node, so the
// publishing node learns of the room's members there only through the
// interest table. Each probe has a room of its own (NAME~probe-<tag>-<k>),
// with no member anywhere, and a client of its own on node A:
//
//  1. the client connects and gets its welcome frame;
//  2. its join frame is sent (time J) and, at once, POST /publish calls into
//     the probe room start on node B, one after another, each answered
//     before the next;
//  3. the first message the client receives in the room (time F) ends the
//     probe: the sample is F - J. The joined frame's time gives the join's
//     own latency.
//
// F - J covers the join on A, A's announcement of its count to B (the
// interest table), and the first publish through B after B knows, relayed
// to A and written to the client: it reads high by at most one /publish
// call, the wait for the next call to start. Probes run one at a time, on
// the clients' nodes in turn, each publishing through another node.
const (
	probeSuffix = "~probe-"
	probeLimit  = 5 * time.Second // a probe gives up after this
)

// ProbeSummary is the join probes' results.
type ProbeSummary struct {
	Probes   int `json:"probes"`
	OK       int `json:"ok"`
	TimedOut int `json:"timed_out"` // no message within 5 s of the join
	Failed   int `json:"failed"`    // could not connect, join, or publish
	// FirstPublish is join frame sent → first message of a publish through
	// another node received, per probe.
	FirstPublish Latency `json:"first_publish"`
	// Joined is join frame sent → joined frame received, per probe.
	Joined Latency `json:"joined"`
	// PublishCalls is the /publish calls made per probe until one reached
	// the client, on average.
	PublishCalls float64  `json:"publish_calls_mean"`
	Errors       []string `json:"errors,omitempty"`
}

// probeJoins runs o.JoinProbes probes, one after another; nil without at
// least two nodes.
func (r *runner) probeJoins(ctx context.Context) *ProbeSummary {
	o := r.o
	if o.JoinProbes == 0 {
		return nil
	}
	if len(o.Nodes) < 2 {
		r.logf("join probes skipped: they publish through another node than the client's, and there is one node")
		return nil
	}
	ps := &ProbeSummary{}
	first, joined := NewHistogram(), NewHistogram()
	auth, err := session.NewAuthenticator([]byte(r.secret))
	if err != nil {
		ps.Errors = append(ps.Errors, err.Error())
		return ps
	}
	client := &http.Client{Timeout: sendTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
	defer client.CloseIdleConnections()
	tag := make([]byte, 3)
	_, _ = rand.Read(tag)
	r.logf("join probes: %d, one at a time", o.JoinProbes)
	var calls int
	for k := range o.JoinProbes {
		if ctx.Err() != nil {
			break
		}
		a := o.ClientsOn[k%len(o.ClientsOn)]
		var others []int
		for _, i := range o.SendTo {
			if i != a {
				others = append(others, i)
			}
		}
		if len(others) == 0 {
			for i := range o.Nodes {
				if i != a {
					others = append(others, i)
				}
			}
		}
		b := others[k%len(others)]
		p := &probe{
			room:   o.Room + probeSuffix + hex.EncodeToString(tag) + "-" + strconv.Itoa(k),
			user:   "bench-probe-" + strconv.Itoa(k),
			nodeA:  o.Nodes[a],
			nodeB:  o.Nodes[b],
			apiKey: r.apiKey,
			client: client,
		}
		res, err := p.run(ctx, auth)
		ps.Probes++
		switch {
		case errors.Is(err, errProbeTimeout):
			ps.TimedOut++
		case err != nil:
			ps.Failed++
		default:
			ps.OK++
			first.Record(int64(res.first))
			joined.Record(int64(res.joined))
			calls += res.calls
		}
		if err != nil && len(ps.Errors) < 5 {
			ps.Errors = append(ps.Errors, fmt.Sprintf("probe %d (%s, publishing on %s): %v", k, r.sum.Nodes[a].Name, r.sum.Nodes[b].Name, err))
		}
	}
	ps.FirstPublish, ps.Joined = first.Latency(), joined.Latency()
	if ps.OK > 0 {
		ps.PublishCalls = float64(calls) / float64(ps.OK)
	}
	return ps
}

var errProbeTimeout = errors.New("no message in the room within 5s of the join")

// probe is one join probe: its room, its client's user, the client's node
// (A) and the publishing node (B).
type probe struct {
	room, user   string
	nodeA, nodeB string
	apiKey       string
	client       *http.Client
}

type probeResult struct {
	first, joined time.Duration
	calls         int // /publish calls until one was delivered
}

// probeFrame is a frame the probe's client received, and when.
type probeFrame struct {
	b  []byte
	at time.Time
}

// probeEvents is the probe client's gws.Event: it hands every frame on.
type probeEvents struct {
	frames chan probeFrame
	closed chan struct{}
}

func (e *probeEvents) OnOpen(*gws.Conn)             {}
func (e *probeEvents) OnClose(*gws.Conn, error)     { close(e.closed) }
func (e *probeEvents) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (e *probeEvents) OnPong(*gws.Conn, []byte)     {}
func (e *probeEvents) OnMessage(_ *gws.Conn, m *gws.Message) {
	f := probeFrame{b: bytes.Clone(m.Bytes()), at: time.Now()}
	m.Close()
	select {
	case e.frames <- f:
	default: // more than the probe reads: not ours
	}
}

// run connects the probe's client, joins and publishes until the client
// receives a message in the room; it closes the client before returning.
func (p *probe) run(ctx context.Context, auth *session.Authenticator) (probeResult, error) {
	var res probeResult
	tok, err := auth.MintRooms(p.user, "probe", []string{p.room}, time.Hour)
	if err != nil {
		return res, err
	}
	ev := &probeEvents{frames: make(chan probeFrame, 64), closed: make(chan struct{})}
	d := net.Dialer{Timeout: handshakeTimeout}
	nc, err := d.DialContext(ctx, "tcp", p.nodeA)
	if err != nil {
		return res, err
	}
	conn, _, err := gws.NewClientFromConn(ev, &gws.ClientOption{
		Addr:             "ws://" + p.nodeA + "/ws",
		RequestHeader:    http.Header{"Authorization": {"Bearer " + tok}},
		HandshakeTimeout: handshakeTimeout,
	}, nc)
	if err != nil {
		return res, err
	}
	var loop sync.WaitGroup
	loop.Go(conn.ReadLoop)
	defer func() {
		_ = conn.NetConn().SetWriteDeadline(time.Now().Add(time.Second))
		_ = conn.WriteClose(1000, nil) // also closes the socket: the read loop ends
		loop.Wait()
	}()

	w := &probeWait{ctx: ctx, ev: ev, limit: time.NewTimer(probeLimit)}
	defer w.limit.Stop()
	if f, err := w.next(); err != nil {
		return res, fmt.Errorf("waiting for the welcome frame: %w", err)
	} else if !bytes.HasPrefix(f.b, []byte(`{"type":"welcome"`)) {
		return res, fmt.Errorf("first frame %.100s, want welcome", f.b)
	}

	pctx, stop := context.WithCancel(ctx)
	defer stop()
	pub := make(chan publishOutcome, 1)
	joinAt := time.Now()
	if err := conn.WriteMessage(gws.OpcodeText, []byte(`{"type":"join","room":`+strconv.Quote(p.room)+`}`)); err != nil {
		return res, fmt.Errorf("join: %w", err)
	}
	go func() { pub <- p.publishUntilDelivered(pctx) }()
	w.pub = pub
	res.first, res.joined, err = p.await(w, joinAt)
	stop()
	if w.pub != nil {
		w.outcome = <-pub // the publisher has ended
	}
	res.calls = w.outcome.calls
	return res, err
}

// probeWait waits for the probe client's next frame, bounded by the
// probe's time limit, and watches the publisher's end.
type probeWait struct {
	ctx     context.Context
	ev      *probeEvents
	limit   *time.Timer
	pub     chan publishOutcome // nil once the publisher ended
	outcome publishOutcome
}

func (w *probeWait) next() (probeFrame, error) {
	for {
		select {
		case f := <-w.ev.frames:
			return f, nil
		case out := <-w.pub:
			w.pub, w.outcome = nil, out
			if out.err != nil {
				return probeFrame{}, out.err
			}
		case <-w.ev.closed:
			return probeFrame{}, errors.New("the node closed the connection")
		case <-w.limit.C:
			return probeFrame{}, errProbeTimeout
		case <-w.ctx.Done():
			return probeFrame{}, w.ctx.Err()
		}
	}
}

// await reads the probe client's frames until the first message in the
// room.
func (p *probe) await(w *probeWait, joinAt time.Time) (first, joined time.Duration, err error) {
	inRoom := []byte(`"room":` + strconv.Quote(p.room))
	for {
		f, err := w.next()
		if err != nil {
			return 0, 0, err
		}
		switch {
		case bytes.HasPrefix(f.b, joinedPrefix):
			joined = f.at.Sub(joinAt)
		case bytes.HasPrefix(f.b, joinErrorPrefix):
			return 0, 0, fmt.Errorf("join refused: %s", f.b)
		case bytes.HasPrefix(f.b, msgPrefix) && bytes.Contains(f.b, inRoom):
			if joined == 0 {
				return 0, 0, errors.New("a message in the room before the joined frame")
			}
			return f.at.Sub(joinAt), joined, nil
		}
	}
}

type publishOutcome struct {
	calls int // /publish calls made
	err   error
}

// publishUntilDelivered calls POST /publish into the probe's room on node
// B, one call after another, until one reports a delivery or ctx ends.
func (p *probe) publishUntilDelivered(ctx context.Context) (out publishOutcome) {
	body := []byte(`{"room":` + strconv.Quote(p.room) + `,"data":{"probe":true}}`)
	url := "http://" + p.nodeB + "/publish"
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			out.err = err
			return out
		}
		req.Header.Set("Content-Type", "application/json")
		if p.apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+p.apiKey)
		}
		resp, err := p.client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				out.err = err
			}
			return out
		}
		a, err := decodeAnswer(resp.Body)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			out.err = fmt.Errorf("POST /publish on %s: status %d (%v)", p.nodeB, resp.StatusCode, err)
			return out
		}
		out.calls++
		if a.Delivered > 0 {
			return out
		}
	}
	return out
}
