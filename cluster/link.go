package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"wsmesh/internal/panics"
)

// Errors a Call can return.
var (
	ErrUnknownNode = errors.New("cluster: no such live member")
	ErrUnreachable = errors.New("cluster: node unreachable")
	ErrNoAnswer    = errors.New("cluster: node did not answer in time")
	ErrQueueFull   = errors.New("cluster: queue to node full")
	ErrClosed      = errors.New("cluster: shut down")
)

// Link messages (batches and acks, messages.go) end in a MAC of macSize
// bytes: HMAC-SHA256, keyed with Config.LinkKey, over the receiver's name
// (length-prefixed, not sent) and the whole message before the MAC (type
// byte and body), truncated. NotifyMsg checks it before reading anything
// else (linkauth.go).

// Link limits.
const (
	maxBatchItems = 4096
	maxBatchBytes = 1 << 20
)

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

	mu           sync.Mutex // guards the fields below; lock order: table.mu, Cluster.mu, peer.mu (LOCKS.md)
	node         *memberlist.Node
	epoch        uint64    // the peer's boot epoch, from its meta
	queue        queue     // items waiting, at most Config.QueueLimit
	needSnapshot bool      // send our snapshot first in the next batch
	downUntil    time.Time // after a failed batch: calls fail at once until then
	failing      bool      // the last batch failed: the peer is suspect

	wake  chan struct{} // buffered(1): the queue is not empty
	acks  chan *ackMsg
	inbox chan *batchMsg // batches from the peer, in arrival order
	stop  chan struct{}  // closed when the peer leaves or the cluster shuts down

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
		acks:         make(chan *ackMsg, 4),
		inbox:        make(chan *batchMsg, 64),
		stop:         make(chan struct{}),
	}
}

// start launches the sender and receiver; c.wg waits for them. The first
// batch carries our snapshot and asks for the peer's.
func (p *peer) start() {
	p.send(snapshotReqMsg{}.item())
	p.c.wg.Add(2)
	go p.sendLoop()
	go p.receiveLoop()
}

// enqueue queues an item; w, if not nil, gets its reply. A full queue
// fails it at once, and so does a link that failed moments ago, while it
// backs off, if someone waits.
func (p *peer) enqueue(it item, w chan callResult) error {
	p.mu.Lock()
	if p.queue.len() >= p.c.cfg.QueueLimit {
		p.mu.Unlock()
		p.c.stats.queueFull.Add(1)
		return ErrQueueFull
	}
	if w != nil && time.Now().Before(p.downUntil) {
		p.mu.Unlock()
		return ErrUnreachable
	}
	p.queue.push(it, w)
	p.mu.Unlock()
	p.kick()
	return nil
}

// send queues an item nobody waits a reply for.
func (p *peer) send(it item) error { return p.enqueue(it, nil) }

// enqueueDeltaTableLocked queues a delta item; p.c.table.mu must be held
// (write), so that deltas are queued in seq order and never between the
// snapshot takeBatch encodes and the deltas it drops. A full queue drops
// queued deltas for a snapshot in the next batch.
func (p *peer) enqueueDeltaTableLocked(delta item) {
	p.mu.Lock()
	switch {
	case p.needSnapshot: // the snapshot will include it
	case p.queue.len() >= p.c.cfg.QueueLimit:
		p.needSnapshot = true
		p.dropDeltasLocked()
	default:
		p.queue.push(delta, nil)
	}
	p.mu.Unlock()
	p.kick()
}

// resync makes the next batch carry our snapshot and ask for the peer's.
func (p *peer) resync() {
	p.mu.Lock()
	p.needSnapshot = true
	p.mu.Unlock()
	_ = p.send(snapshotReqMsg{}.item())
}

func (p *peer) setFailing(f bool) {
	p.mu.Lock()
	p.failing = f
	p.mu.Unlock()
}

func (p *peer) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// dropDeltasLocked drops the queued deltas: the snapshot that goes next
// replaces them. p.mu must be held.
func (p *peer) dropDeltasLocked() {
	p.queue.keep(func(it item, _ chan callResult) bool { return it.Kind != kindDelta }, nil)
}

// takeBatch removes the next batch from the queue, with our snapshot in
// front when one is due.
func (p *peer) takeBatch() queue {
	p.mu.Lock()
	need := p.needSnapshot
	p.mu.Unlock()
	if need { // lock order: table before peer; no delta can be queued meanwhile
		p.c.table.mu.RLock()
		defer p.c.table.mu.RUnlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var snap queue
	size := 0
	if need && p.needSnapshot {
		it := p.c.table.snapshotLocked(p.c.cfg.NodeName).item()
		snap.push(it, nil)
		size += len(it.Body)
		p.dropDeltasLocked()
		p.needSnapshot = false
	}
	n := 0
	for n < p.queue.len() && snap.len()+n < maxBatchItems && (size < maxBatchBytes || snap.len()+n == 0) {
		size += len(p.queue.items[n].Body)
		n++
	}
	out := p.queue.take(n)
	if snap.len() > 0 {
		out = queue{items: append(snap.items, out.items...), waiters: append(snap.waiters, out.waiters...)}
	}
	if p.queue.len() > 0 {
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
		if batch.len() == 0 {
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

// sendBatch sends one batch and waits for its ack; every waiter in it is
// answered either way. ErrClosed: the link is stopping.
func (p *peer) sendBatch(seq uint64, batch queue, timer *time.Timer) error {
	m := batchMsg{header: header{From: p.c.cfg.NodeName, Link: p.link, Seq: seq}, Items: batch.items}
	msg := p.c.auth.seal(m.encode(), p.name)
	p.mu.Lock()
	node := p.node
	p.mu.Unlock()
	start := time.Now()
	if err := p.c.ml.SendReliable(node, msg); err != nil {
		p.c.stats.sendFailures.Add(1)
		p.c.log.Debug("link send failed", "peer", p.name, "items", batch.len(), "err", err)
		err = fmt.Errorf("%w: %v", ErrUnreachable, err)
		p.failed(batch, err)
		return err
	}
	timer.Reset(p.c.cfg.CallTimeout - time.Since(start))
	for {
		select {
		case a := <-p.acks:
			if a.Link != p.link || a.Seq != seq {
				continue // the ack of an abandoned batch
			}
			timer.Stop() // Go 1.23+: no stale tick can be received after Stop or Reset
			p.c.stats.batches.Add(1)
			p.c.stats.items.Add(uint64(batch.len()))
			if p.c.cfg.OnBatch != nil {
				p.c.cfg.OnBatch(batch.len(), time.Since(start))
			}
			for i, w := range batch.waiters {
				if w != nil {
					var data []byte
					if i < len(a.Replies) {
						data = a.Replies[i]
					}
					w <- callResult{data: data}
				}
			}
			return nil
		case <-timer.C:
			p.c.stats.ackTimeouts.Add(1)
			p.c.log.Debug("link ack timed out", "peer", p.name, "seq", seq, "items", batch.len())
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
	// Keep the items nobody waits for (table traffic); fail the calls.
	p.queue.keep(func(_ item, w chan callResult) bool { return w == nil }, ErrUnreachable)
	p.mu.Unlock()
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

// failed answers a batch that may not have arrived; the peer's copy of
// our sessions may have missed deltas, so the next batch resyncs it.
func (p *peer) failed(batch queue, err error) {
	batch.fail(err)
	p.mu.Lock()
	p.needSnapshot = true
	p.mu.Unlock()
	p.kick()
}

func (p *peer) failQueued(err error) {
	p.mu.Lock()
	q := p.queue
	p.queue = queue{}
	p.mu.Unlock()
	q.fail(err)
}

// call queues an item for the peer and waits for the peer's reply.
func (p *peer) call(ctx context.Context, it item) ([]byte, error) {
	w := make(chan callResult, 1)
	if err := p.enqueue(it, w); err != nil {
		return nil, err
	}
	select {
	case r := <-w:
		return r.data, r.err
	case <-ctx.Done():
		return nil, ErrNoAnswer
	}
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

// receive handles a batch of the peer's in order, unless it is late or
// from an older link, and acks it with the items' replies. Then it
// releases the batch.
func (p *peer) receive(m *batchMsg) {
	defer m.release()
	switch {
	case m.Link < p.inLink:
		return // from an older link of the peer's (or an older run of it)
	case m.Link > p.inLink:
		p.inLink, p.inSeq = m.Link, 0
	case m.Seq <= p.inSeq:
		return // late: the peer gave up on it and moved on
	}
	p.inSeq = m.Seq
	a := ackMsg{header: header{From: p.c.cfg.NodeName, Link: m.Link, Seq: m.Seq}, Replies: make([][]byte, len(m.Items))}
	for i, it := range m.Items {
		a.Replies[i] = p.handleItemRecovered(it)
	}
	p.mu.Lock()
	node := p.node
	p.mu.Unlock()
	if err := p.c.ml.SendReliable(node, p.c.auth.seal(a.encode(), p.name)); err != nil {
		p.c.log.Debug("ack send failed", "peer", p.name, "err", err)
	}
}

// handleItemRecovered handles one item of the peer's batch. A malformed
// item is logged and dropped. A panic in it (a bug, in the cluster or in
// the relay handler) is logged with its stack and the item gets no reply;
// the link and the process go on.
func (p *peer) handleItemRecovered(it item) (reply []byte) {
	defer func() {
		if v := recover(); v != nil {
			p.c.log.Error("handling a batch item panicked: item dropped", append([]any{"peer", p.name, "kind", it.Kind}, panics.Attrs(v)...)...)
			reply = nil
		}
	}()
	reply, err := p.handleItem(it)
	if err != nil {
		p.c.log.Warn("malformed batch item dropped", "peer", p.name, "kind", it.Kind, "err", err)
	}
	return reply
}

// handleItem decodes one item of the peer's batch by its kind and hands
// it to that kind's handler; it returns the reply that goes back in the ack.
func (p *peer) handleItem(it item) ([]byte, error) {
	switch it.Kind {
	case kindRelay:
		m, err := decodeRelay(it.Body)
		if err != nil {
			return nil, err
		}
		return p.handleRelay(m), nil
	case kindSnapshotReq:
		return nil, decodeThen(it.Body, decodeSnapshotReq, p.handleSnapshotReq)
	case kindSnapshot:
		return nil, decodeThen(it.Body, decodeSnapshot, p.handleSnapshot)
	case kindDelta:
		return nil, decodeThen(it.Body, decodeDelta, p.handleDelta)
	case kindEvict:
		return nil, decodeThen(it.Body, decodeEvict, p.handleEvict)
	case kindLeaving:
		return nil, decodeThen(it.Body, decodeLeaving, p.handleLeaving)
	default:
		p.c.log.Warn("unknown item kind from peer", "peer", p.name, "kind", it.Kind)
		return nil, nil
	}
}

// decodeThen decodes b and hands the message to handle.
func decodeThen[M any](b []byte, decode func([]byte) (M, error), handle func(M)) error {
	m, err := decode(b)
	if err != nil {
		return err
	}
	handle(m)
	return nil
}

// handleRelay hands a relay payload to the Handler; its reply goes back in the ack.
func (p *peer) handleRelay(m relayMsg) []byte {
	return p.c.handler.HandleRelay(p.name, m.Payload)
}

// handleSnapshotReq puts our snapshot in the next batch to the peer.
func (p *peer) handleSnapshotReq(snapshotReqMsg) {
	p.mu.Lock()
	p.needSnapshot = true
	p.mu.Unlock()
	p.kick()
}

// handleLeaving notes that the peer leaves on purpose: when gossip reports
// it gone, it is "left", not "dead".
func (p *peer) handleLeaving(leavingMsg) {
	p.c.mu.Lock()
	p.c.leaving[p.name] = time.Now()
	p.c.mu.Unlock()
}
