package cluster

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"wsmesh/internal/wire"
)

// Errors a Call can return.
var (
	ErrUnknownNode = errors.New("cluster: no such live member")
	ErrUnreachable = errors.New("cluster: node unreachable")
	ErrNoAnswer    = errors.New("cluster: node did not answer in time")
	ErrQueueFull   = errors.New("cluster: queue to node full")
	ErrClosed      = errors.New("cluster: shut down")
)

// Message types: the first byte of every memberlist user message. Every
// message ends in a MAC of macSize bytes: HMAC-SHA256, keyed with
// Config.LinkKey, over the receiver's name (length-prefixed, not sent) and
// the whole message before the MAC (type byte and body), truncated.
// NotifyMsg checks it before reading anything else (linkauth.go).
const (
	msgBatch byte = 1 // from, link, seq, items (kind, payload), MAC
	msgAck   byte = 2 // from, link, seq, replies, MAC
)

// Item kinds inside a batch.
const (
	kindSnapshot    byte = 1  // the sender's sessions: replaces what the receiver knows of it
	kindDelta       byte = 2  // one connect or disconnect on the sender
	kindSnapshotReq byte = 3  // "send me your snapshot"
	kindEvict       byte = 4  // a newer login of a key the receiver holds
	kindLeaving     byte = 5  // the sender is leaving on purpose: report it "left", not "dead"
	kindRelay       byte = 16 // for the relay handler; its reply goes back in the ack
)

// Link limits.
const (
	maxBatchItems = 4096
	maxBatchBytes = 1 << 20
)

// call is one item queued on a link.
type call struct {
	kind    byte
	payload []byte
	reply   chan callResult // buffered(1); nil: nobody waits
}

type callResult struct {
	data []byte
	err  error
}

type ack struct {
	link, seq uint64
	replies   [][]byte
}

// peer is this node's link with another member: an ordered, acknowledged
// channel over memberlist's reliable (TCP) messages. One sender goroutine
// sends one batch at a time and waits for its ack (or CallTimeout) before
// the next, so batches arrive in order and grow while one is in flight.
// One receiver goroutine handles the peer's batches in order and acks them.
type peer struct {
	c    *Cluster
	name string
	// link numbers this link's batches with seq: unique per link and larger
	// for a link made later, so a peer that still remembers an older link
	// with us (we saw it die, it did not see us) resets instead of taking
	// the new batches for late ones.
	link uint64

	mu           sync.Mutex // guards the fields below; lock order: table.mu, then peer.mu
	node         *memberlist.Node
	epoch        uint64 // the peer's boot epoch, from its meta
	queue        []*call
	needSnapshot bool      // send our snapshot first in the next batch
	downUntil    time.Time // after a failed batch: calls fail at once until then
	failing      bool      // the last batch failed: the peer is suspect

	wake  chan struct{} // buffered(1): the queue is not empty
	acks  chan ack
	inbox chan []byte   // batches from the peer, in arrival order
	stop  chan struct{} // closed when the peer leaves or the cluster shuts down

	// receiver state; only the receiver goroutine touches it
	inLink, inSeq uint64
}

func newPeer(c *Cluster, n *memberlist.Node, epoch uint64) *peer {
	return &peer{
		c:            c,
		name:         n.Name,
		link:         c.nextLinkID(),
		node:         n,
		epoch:        epoch,
		needSnapshot: true,
		wake:         make(chan struct{}, 1),
		acks:         make(chan ack, 4),
		inbox:        make(chan []byte, 64),
		stop:         make(chan struct{}),
	}
}

// start launches the sender and receiver; c.wg waits for them. The first
// batch carries our snapshot and asks for the peer's.
func (p *peer) start() {
	p.enqueue(&call{kind: kindSnapshotReq})
	p.c.wg.Add(2)
	go p.sendLoop()
	go p.receiveLoop()
}

// enqueue queues a call. A full queue fails the call at once, and so does
// a link that failed moments ago, while it backs off.
func (p *peer) enqueue(cl *call) error {
	p.mu.Lock()
	if len(p.queue) >= p.c.cfg.QueueLimit {
		p.mu.Unlock()
		p.c.stats.queueFull.Add(1)
		return ErrQueueFull
	}
	if cl.reply != nil && time.Now().Before(p.downUntil) {
		p.mu.Unlock()
		return ErrUnreachable
	}
	p.queue = append(p.queue, cl)
	p.mu.Unlock()
	p.kick()
	return nil
}

// enqueueDeltaLocked queues a delta; p.c.table.mu must be held (write). A
// full queue drops queued deltas for a snapshot in the next batch.
func (p *peer) enqueueDeltaLocked(payload []byte) {
	p.mu.Lock()
	switch {
	case p.needSnapshot: // the snapshot will include it
	case len(p.queue) >= p.c.cfg.QueueLimit:
		p.needSnapshot = true
		p.queue = dropKind(p.queue, kindDelta)
	default:
		p.queue = append(p.queue, &call{kind: kindDelta, payload: payload})
	}
	p.mu.Unlock()
	p.kick()
}

// resync makes the next batch carry our snapshot and ask for the peer's.
func (p *peer) resync() {
	p.mu.Lock()
	p.needSnapshot = true
	p.mu.Unlock()
	_ = p.enqueue(&call{kind: kindSnapshotReq})
}

func (p *peer) setFailing(f bool) {
	p.mu.Lock()
	p.failing = f
	p.mu.Unlock()
}

func (p *peer) isFailing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failing
}

func (p *peer) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func dropKind(q []*call, kind byte) []*call {
	out := q[:0]
	for _, cl := range q {
		if cl.kind != kind {
			out = append(out, cl)
		}
	}
	clear(q[len(out):])
	return out
}

// takeBatch removes the next batch from the queue, with our snapshot in
// front when one is due.
func (p *peer) takeBatch() []*call {
	p.mu.Lock()
	need := p.needSnapshot
	p.mu.Unlock()
	if need { // lock order: table before peer; no delta can be queued meanwhile
		p.c.table.mu.RLock()
		defer p.c.table.mu.RUnlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*call
	size := 0
	if need && p.needSnapshot {
		snap := encodeSnapshotLocked(p.c.epoch, p.c.table.origins[p.c.cfg.NodeName])
		out = append(out, &call{kind: kindSnapshot, payload: snap})
		size += len(snap)
		p.queue = dropKind(p.queue, kindDelta)
		p.needSnapshot = false
	}
	n := 0
	for n < len(p.queue) && len(out) < maxBatchItems && (size < maxBatchBytes || len(out) == 0) {
		out = append(out, p.queue[n])
		size += len(p.queue[n].payload)
		n++
	}
	rest := copy(p.queue, p.queue[n:])
	clear(p.queue[rest:])
	p.queue = p.queue[:rest]
	if rest > 0 {
		p.kick()
	}
	return out
}

func (p *peer) sendLoop() {
	defer p.c.wg.Done()
	var seq uint64
	failures := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-p.stop:
			p.failQueued(ErrUnreachable)
			return
		case <-p.wake:
		}
		batch := p.takeBatch()
		if len(batch) == 0 {
			continue
		}
		seq++
		err := p.sendBatch(seq, batch, timer)
		switch {
		case errors.Is(err, ErrClosed):
			p.failQueued(ErrUnreachable)
			return
		case err != nil:
			failures++
			p.setFailing(true)
			if !p.backOff(failures, timer) {
				p.failQueued(ErrUnreachable)
				return
			}
		default:
			failures = 0
			p.setFailing(false)
		}
	}
}

// sendBatch sends one batch and waits for its ack; every call in it is
// answered either way. ErrClosed: the link is stopping.
func (p *peer) sendBatch(seq uint64, batch []*call, timer *time.Timer) error {
	msg := p.c.auth.seal(encodeBatch(p.c.cfg.NodeName, p.link, seq, batch), p.name)
	p.mu.Lock()
	node := p.node
	p.mu.Unlock()
	start := time.Now()
	if err := p.c.ml.SendReliable(node, msg); err != nil {
		p.c.stats.sendFailures.Add(1)
		p.c.log.Debug("link send failed", "peer", p.name, "items", len(batch), "err", err)
		err = fmt.Errorf("%w: %v", ErrUnreachable, err)
		p.failed(batch, err)
		return err
	}
	timer.Reset(p.c.cfg.CallTimeout - time.Since(start))
	for {
		select {
		case a := <-p.acks:
			if a.link != p.link || a.seq != seq {
				continue // the ack of an abandoned batch
			}
			timer.Stop() // Go 1.23+: no stale tick can be received after Stop or Reset
			p.c.stats.batches.Add(1)
			p.c.stats.items.Add(uint64(len(batch)))
			if p.c.cfg.OnBatch != nil {
				p.c.cfg.OnBatch(len(batch), time.Since(start))
			}
			for i, cl := range batch {
				if cl.reply != nil {
					var data []byte
					if i < len(a.replies) {
						data = a.replies[i]
					}
					cl.reply <- callResult{data: data}
				}
			}
			return nil
		case <-timer.C:
			p.c.stats.ackTimeouts.Add(1)
			p.c.log.Debug("link ack timed out", "peer", p.name, "seq", seq, "items", len(batch))
			p.failed(batch, ErrNoAnswer)
			return ErrNoAnswer
		case <-p.stop:
			p.failed(batch, ErrUnreachable)
			return ErrClosed
		}
	}
}

// backOff waits after the failures-th failed batch in a row (20ms, 40ms,
// ... up to CallTimeout); calls made meanwhile fail at once. False: the
// link is stopping.
func (p *peer) backOff(failures int, timer *time.Timer) bool {
	d := min(20*time.Millisecond<<min(failures-1, 10), p.c.cfg.CallTimeout)
	p.mu.Lock()
	p.downUntil = time.Now().Add(d)
	q := p.queue
	p.queue = dropCalls(p.queue)
	p.mu.Unlock()
	for _, cl := range q {
		if cl.reply != nil {
			cl.reply <- callResult{err: ErrUnreachable}
		}
	}
	timer.Reset(d)
	select {
	case <-timer.C:
		p.kick()
		return true
	case <-p.stop:
		timer.Stop()
		return false
	}
}

// dropCalls keeps the items nobody waits for (table traffic).
func dropCalls(q []*call) []*call {
	out := make([]*call, 0, len(q))
	for _, cl := range q {
		if cl.reply == nil {
			out = append(out, cl)
		}
	}
	return out
}

// failed answers a batch that may not have arrived; the peer's copy of
// our sessions may have missed deltas, so the next batch resyncs it.
func (p *peer) failed(batch []*call, err error) {
	for _, cl := range batch {
		if cl.reply != nil {
			cl.reply <- callResult{err: err}
		}
	}
	p.mu.Lock()
	p.needSnapshot = true
	p.mu.Unlock()
	p.kick()
}

func (p *peer) failQueued(err error) {
	p.mu.Lock()
	q := p.queue
	p.queue = nil
	p.mu.Unlock()
	for _, cl := range q {
		if cl.reply != nil {
			cl.reply <- callResult{err: err}
		}
	}
}

// call queues an item for the peer and waits for the peer's reply.
func (p *peer) call(ctx context.Context, kind byte, payload []byte) ([]byte, error) {
	cl := &call{kind: kind, payload: payload, reply: make(chan callResult, 1)}
	if err := p.enqueue(cl); err != nil {
		return nil, err
	}
	select {
	case r := <-cl.reply:
		return r.data, r.err
	case <-ctx.Done():
		return nil, ErrNoAnswer
	}
}

func encodeBatch(from string, link, seq uint64, batch []*call) []byte {
	size := len(from) + 32 + macSize
	for _, cl := range batch {
		size += len(cl.payload) + 6
	}
	b := make([]byte, 0, size)
	b = append(b, msgBatch)
	b = wire.AppendString(b, from)
	b = wire.AppendUvarint(b, link)
	b = wire.AppendUvarint(b, seq)
	b = wire.AppendUvarint(b, uint64(len(batch)))
	for _, cl := range batch {
		b = append(b, cl.kind)
		b = wire.AppendBytes(b, cl.payload)
	}
	return b
}

func encodeAck(from string, link, seq uint64, replies [][]byte) []byte {
	size := len(from) + 32 + macSize
	for _, r := range replies {
		size += len(r) + 4
	}
	b := make([]byte, 0, size)
	b = append(b, msgAck)
	b = wire.AppendString(b, from)
	b = wire.AppendUvarint(b, link)
	b = wire.AppendUvarint(b, seq)
	b = wire.AppendUvarint(b, uint64(len(replies)))
	for _, r := range replies {
		b = wire.AppendBytes(b, r)
	}
	return b
}

// receiveLoop handles the peer's batches in order and acks each one.
func (p *peer) receiveLoop() {
	defer p.c.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case msg := <-p.inbox:
			p.receive(msg)
		}
	}
}

// handleItemRecovered handles one item of the peer's batch. A panic in it
// (a bug, in the cluster or in the relay handler) is logged with its stack
// and the item gets no reply; the link and the process go on.
func (p *peer) handleItemRecovered(kind byte, payload []byte) (reply []byte) {
	defer func() {
		if v := recover(); v != nil {
			p.c.log.Error("handling a batch item panicked: item dropped", "peer", p.name, "kind", kind,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			reply = nil
		}
	}()
	return p.c.handleItem(p, kind, payload)
}

func (p *peer) receive(msg []byte) {
	r := wire.NewReader(msg[1:])
	_ = r.String() // from: already routed here
	link, seq := r.Uvarint(), r.Uvarint()
	n := r.Count()
	if r.Err() != nil {
		p.c.log.Warn("malformed batch", "peer", p.name, "err", r.Err())
		return
	}
	switch {
	case link < p.inLink:
		return // from an older link of the peer's (or an older run of it)
	case link > p.inLink:
		p.inLink, p.inSeq = link, 0
	case seq <= p.inSeq:
		return // late: the peer gave up on it and moved on
	}
	p.inSeq = seq
	replies := make([][]byte, n)
	for i := range n {
		kind := r.Byte()
		payload := r.Bytes()
		if r.Err() != nil {
			p.c.log.Warn("malformed batch item", "peer", p.name, "err", r.Err())
			break
		}
		replies[i] = p.handleItemRecovered(kind, payload)
	}
	p.mu.Lock()
	node := p.node
	p.mu.Unlock()
	out := p.c.auth.seal(encodeAck(p.c.cfg.NodeName, link, seq, replies), p.name)
	if err := p.c.ml.SendReliable(node, out); err != nil {
		p.c.log.Debug("ack send failed", "peer", p.name, "err", err)
	}
}
