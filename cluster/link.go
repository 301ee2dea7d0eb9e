package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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
	// snapshotChunkBytes bounds one chunk of a snapshot: half a batch,
	// leaving the other half to calls queued meanwhile, so that a large
	// snapshot never holds them back by more than a batch.
	snapshotChunkBytes = maxBatchBytes / 2
	// maxRetransmits bounds how many times a batch is sent again, with the
	// same link id and seq, when its ack does not come within
	// CallTimeout (or it could not be sent): the receiver acks a copy it
	// has handled already without handling it again. After that the link
	// gives the batch up and resyncs the peer's copy of our sessions.
	maxRetransmits = 3
	// applyQueue bounds the batches of table items (snapshot chunks,
	// deltas) a link's receiver has acked and its applier not yet applied.
	applyQueue = 16
	// deltaLinger is how long session-table deltas that may wait (a
	// disconnect, a room count that stays above zero: announceTableLocked)
	// wait for more when queued alone, counted from the first of them, so
	// that deltas trickling in share a batch: a batch costs each peer a
	// stream in and an ack stream out, ~200 µs of CPU, a delta in it a few
	// µs (docs/benchmarks.md, "Links (issue 11)"). An urgent delta (a
	// connect, a room's first member: a routing that was not possible),
	// or anything else queued (a relay call, an eviction, a snapshot
	// request), ends the wait at once and takes the deltas along; a
	// snapshot never waits. So a user is routable from other nodes as
	// soon as the link carries it, and only what is already true of a
	// node ("no such session here") may lag by up to 10 ms. Why 10 ms: at
	// 300 disconnects/s it puts 3-4 deltas in a batch; 2 ms catches almost
	// none, 20 ms gives little more. A push/pull digest read while deltas
	// linger may see the table behind: MergeRemoteState asks for a
	// snapshot only if it is still behind a CallTimeout later.
	deltaLinger = 10 * time.Millisecond
	// lingerMaxItems: a queue this long goes at once, linger or not; it
	// also bounds the scan of the queue that decides whether to linger.
	lingerMaxItems = 256
)

// peer is this node's link with another member: an ordered, acknowledged
// channel over memberlist's reliable (TCP) messages. One sender goroutine
// sends one batch at a time and waits for its ack (or CallTimeout) before
// the next, so batches arrive in order and grow while one is in flight;
// a batch whose ack does not come is sent again as it was (maxRetransmits).
// Session-table deltas queued with nothing else wait up to deltaLinger
// for more (lingerDeltas); anything else sends the batch at once.
// One receiver goroutine takes the peer's batches in order, handles the
// items that need a reply (relay calls) and acks at once; an applier
// goroutine then applies the table items (snapshot chunks, deltas) in
// order, so that a large snapshot does not delay acks.
//
// Every message carries its sender's boot epoch; the link takes only
// those whose epoch is the one memberlist's meta gives for the peer's
// name (p.epoch): a second process started with the peer's name is
// refused and logged (refuseIdentity, linkauth.go).
type peer struct {
	c    *Cluster
	name string
	// link numbers this link's batches with seq: unique among this run's
	// links and larger for a link made later, so that a peer that still
	// remembers an older link with us (we saw it die, it did not see us)
	// resets instead of taking the new batches for late ones. A new run
	// of ours has a new epoch, which resets the peer's receiver anyway.
	link  uint64
	stats *peerStats // this link's counters (Cluster.PeerStats)

	mu           sync.Mutex // guards the fields below; lock order: table.mu, Cluster.mu, peer.mu (LOCKS.md)
	node         *memberlist.Node
	epoch        uint64    // the peer's boot epoch, from its meta
	queue        queue     // items waiting, at most Config.QueueLimit
	needSnapshot bool      // take a new snapshot of ours for the next batch
	snapshotting bool      // a snapshot of ours is under way to the peer, not all acked
	downUntil    time.Time // after a failed batch: calls fail at once until then
	failing      bool      // the last batch failed: the peer is suspect
	deltasSince  time.Time // when the oldest delta in the queue was queued; zero: none since the queue was last emptied
	rush         bool      // an urgent delta is queued (a connect, a room's first member): no lingering

	linger time.Duration // deltaLinger, or the test's (lingerForTest)
	wake   chan struct{} // buffered(1): the queue is not empty
	urgent chan struct{} // buffered(1): an item that must not linger was queued (hurry)
	acks   chan *ackMsg
	inbox  chan *batchMsg // batches from the peer, in arrival order
	applyq chan []item    // table items acked, for the applier, in order
	stop   chan struct{}  // closed when the peer leaves or the cluster shuts down

	// syncing: the applier is applying a snapshot of the peer's; until it
	// is done, a digest showing the table behind asks for nothing.
	syncing atomic.Bool
	// digestSeq is the peer's seq in the last push/pull digest, and
	// digestAt when it came (behindDigest); guarded by mu.
	digestSeq uint64
	digestAt  time.Time

	// sender state; only the sender goroutine touches it
	out     *outSnapshot // our snapshot being sent in chunks, nil when all are sent
	outOpen bool         // a snapshot went out whose last chunk is not acked yet

	// receiver state; only the receiver goroutine touches it
	inEpoch, inLink, inSeq uint64
	lastAck                []byte // the sealed ack of batch inSeq, sent again for a copy of it

	// applier state; only the applier goroutine touches it
	in           *inSnapshot // the peer's snapshot being applied
	askedRestart bool        // asked for a snapshot from the start; its chunk 0 has not come
}

// outSnapshot is a snapshot of ours being sent to a peer, a chunk per
// batch: the entries as of seq, taken at once (takeBatch) and encoded
// chunk by chunk as batches go.
type outSnapshot struct {
	epoch, seq uint64
	entries    []*Entry
	rooms      []RoomCount // sent after the entries
	next       int         // entries[next:] are not sent yet
	nextRoom   int         // rooms[nextRoom:] are not sent yet
	index      uint64      // the next chunk's number
}

// newPeer makes the link with n; c.mu must be held (its counters live in
// c.perPeer).
func newPeer(c *Cluster, n *memberlist.Node, epoch uint64) *peer {
	return &peer{
		c:            c,
		name:         n.Name,
		stats:        c.peerStatsLocked(n.Name),
		link:         c.nextLinkID(),
		node:         n,
		epoch:        epoch,
		needSnapshot: true,
		linger:       lingerFor(),
		wake:         make(chan struct{}, 1),
		urgent:       make(chan struct{}, 1),
		acks:         make(chan *ackMsg, 4),
		inbox:        make(chan *batchMsg, 64),
		applyq:       make(chan []item, applyQueue),
		stop:         make(chan struct{}),
	}
}

// start launches the sender, receiver and applier; c.wg waits for them.
// The first batch carries our snapshot and asks for the peer's.
func (p *peer) start() {
	p.send(snapshotReqMsg{}.item())
	p.c.wg.Add(3)
	go p.sendLoop()
	go p.receiveLoop()
	go p.applyLoop()
}

// enqueue queues an item; w, if not nil, gets its reply. A full queue
// fails it at once, and so does a link that failed moments ago, while it
// backs off, if someone waits.
func (p *peer) enqueue(it item, w chan callResult) error {
	p.mu.Lock()
	if p.queue.len() >= p.c.cfg.QueueLimit {
		p.mu.Unlock()
		p.c.stats.queueFull.Add(1)
		p.stats.queueFull.Add(1)
		return ErrQueueFull
	}
	if w != nil && time.Now().Before(p.downUntil) {
		p.mu.Unlock()
		return ErrUnreachable
	}
	p.queue.push(it, w)
	p.mu.Unlock()
	p.hurry()
	return nil
}

// send queues an item nobody waits a reply for.
func (p *peer) send(it item) error { return p.enqueue(it, nil) }

// enqueueDeltaTableLocked queues a delta item; p.c.table.mu must be held
// (write), so that deltas are queued in seq order and never between the
// snapshot takeSnapshot takes and the deltas it drops. A full queue drops
// queued deltas for a snapshot in the next batch.
func (p *peer) enqueueDeltaTableLocked(delta item, urgent bool) {
	p.mu.Lock()
	switch {
	case p.needSnapshot: // the snapshot will include it
	case p.queue.len() >= p.c.cfg.QueueLimit:
		p.needSnapshot = true
		p.dropDeltasLocked()
	default:
		if p.deltasSince.IsZero() {
			p.deltasSince = time.Now()
		}
		p.queue.push(delta, nil)
		p.rush = p.rush || urgent
	}
	full := p.queue.len() >= lingerMaxItems || p.rush
	p.mu.Unlock()
	if full {
		p.hurry()
	} else {
		p.kick()
	}
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

// kick wakes the sender: the queue is not empty. It does not end a
// linger (hurry does).
func (p *peer) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// hurry wakes the sender and ends its linger, if it lingers: something
// that must not wait was queued, or a snapshot is due.
func (p *peer) hurry() {
	p.kick()
	select {
	case p.urgent <- struct{}{}:
	default:
	}
}

// dropDeltasLocked drops the queued deltas: the snapshot that goes next
// replaces them. p.mu must be held.
func (p *peer) dropDeltasLocked() {
	p.queue.keep(func(it item, _ chan callResult) bool { return it.Kind != kindDelta }, nil)
	p.deltasSince = time.Time{}
	p.rush = false
}

// lingerForTest, when not 0, replaces deltaLinger for the links made
// after it is set (setLingerForTest).
var lingerForTest atomic.Int64

func lingerFor() time.Duration {
	if d := lingerForTest.Load(); d != 0 {
		return time.Duration(d)
	}
	return deltaLinger
}

// lingerLeft is how much longer the sender should hold the queue: the
// rest of p.linger since the oldest delta was queued, if the queue holds
// deltas only, fewer than lingerMaxItems, and no snapshot is due or
// under way; else 0. Only the sender calls it (it reads p.out).
func (p *peer) lingerLeft() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.queue.len()
	if n == 0 || n >= lingerMaxItems || p.rush || p.needSnapshot || p.out != nil || p.deltasSince.IsZero() {
		return 0
	}
	for i, it := range p.queue.items {
		if it.Kind != kindDelta || p.queue.waiters[i] != nil {
			return 0
		}
	}
	return p.linger - time.Since(p.deltasSince)
}

// lingerDeltas holds a queue of deltas only (lingerLeft) until the
// oldest has waited p.linger, something urgent is queued (hurry) or the
// link stops, so that deltas queued meanwhile go in the same batch.
// False: the link is stopping.
func (p *peer) lingerDeltas(timer *time.Timer) bool {
	select {
	case <-p.urgent: // stale: whatever it was for is in the queue, which lingerLeft reads next
	default:
	}
	wait := p.lingerLeft()
	if wait <= 0 {
		return true
	}
	timer.Reset(wait)
	select {
	case <-timer.C:
	case <-p.urgent:
		timer.Stop()
	case <-p.stop:
		timer.Stop()
		return false
	}
	return true
}

// takeBatch removes the next batch from the queue. When a snapshot of
// ours is due it takes one (the entries, under table.mu read, so that it
// is consistent with its seq: deltas are queued under table.mu write) and
// drops the deltas queued before it. While a snapshot is under way, each
// batch starts with its next chunk, and the deltas queued after it wait
// until its last chunk goes; other items (calls) go along meanwhile.
// last: the batch carries a snapshot's last chunk.
func (p *peer) takeBatch() (out queue, last bool) {
	p.mu.Lock()
	need, n := p.needSnapshot, min(p.queue.len(), maxBatchItems)
	p.mu.Unlock()
	if need {
		p.takeSnapshot()
	}
	size := 0
	out = queue{items: make([]item, 0, n+1), waiters: make([]chan callResult, 0, n+1)}
	if s := p.out; s != nil {
		it, taken, rooms := snapshotChunk(s.epoch, s.seq, s.index, s.entries[s.next:], s.rooms[s.nextRoom:], snapshotChunkBytes)
		s.next += taken
		s.nextRoom += rooms
		s.index++
		out.push(it, nil)
		size += len(it.Body)
		p.c.stats.snapshotChunks.Add(1)
		if s.next == len(s.entries) && s.nextRoom == len(s.rooms) {
			p.out, last = nil, true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var skip func(item) bool
	if p.out != nil { // the deltas wait for the snapshot's last chunk
		skip = func(it item) bool { return it.Kind == kindDelta }
	}
	p.queue.moveTo(&out, size, skip)
	if p.queue.len() == 0 {
		p.deltasSince = time.Time{}
		p.rush = false
	}
	if p.queue.len() > 0 || p.out != nil {
		p.kick()
	}
	return out, last
}

// takeSnapshot takes our snapshot for the peer, if one is still due.
// Lock order: table before peer; no delta can be queued meanwhile.
func (p *peer) takeSnapshot() {
	p.c.table.mu.RLock()
	defer p.c.table.mu.RUnlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.needSnapshot {
		return
	}
	m := p.c.table.snapshotLocked(p.c.cfg.NodeName)
	if p.outOpen {
		// One under way or not acked to its end: this one replaces it.
		p.c.stats.snapshotsResent.Add(1)
	}
	p.out = &outSnapshot{epoch: m.Epoch, seq: m.Seq, entries: m.Entries, rooms: m.Rooms}
	p.outOpen = true
	p.dropDeltasLocked()
	p.needSnapshot = false
	p.snapshotting = true
	p.c.stats.snapshotsSent.Add(1)
}

func (p *peer) sendLoop() {
	defer p.c.wg.Done()
	var seq uint64
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-p.stop:
			p.failQueued(ErrUnreachable)
			return
		case <-p.wake:
		}
		if !p.lingerDeltas(timer) {
			p.failQueued(ErrUnreachable)
			return
		}
		batch, last := p.takeBatch()
		if batch.len() == 0 {
			continue
		}
		seq++
		if !p.deliver(seq, batch, last, timer) {
			p.failQueued(ErrUnreachable)
			return
		}
	}
}

// deliver sends batch seq until it is acked, up to maxRetransmits more
// times, and answers every waiter in it. A waiter whose item could not be
// sent, or was not acked within CallTimeout, is answered at once
// (ErrUnreachable, ErrNoAnswer) and its item taken out of the copies sent
// after: a call answered with an error is not delivered later, unless the
// first copy arrived and only its ack was lost. Table items stay in every
// copy. False: the link is stopping.
func (p *peer) deliver(seq uint64, batch queue, last bool, timer *time.Timer) bool {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			p.c.stats.retransmits.Add(1)
			p.stats.retransmits.Add(1)
		}
		err := p.sendBatch(seq, batch, timer)
		switch {
		case err == nil:
			if last {
				p.outOpen = false
				p.mu.Lock()
				p.snapshotting = p.out != nil
				p.mu.Unlock()
			}
			p.setFailing(false)
			return true
		case errors.Is(err, ErrClosed):
			return false
		}
		p.setFailing(true)
		batch.keep(func(_ item, w chan callResult) bool { return w == nil }, err)
		if batch.len() == 0 {
			return true // only calls, answered: nothing left to deliver
		}
		if attempt == maxRetransmits {
			p.c.log.Debug("link batch given up: resyncing", "peer", p.name, "seq", seq, "items", batch.len())
			p.failed()
			return p.backOff(attempt+1, timer)
		}
		if errors.Is(err, ErrUnreachable) && !p.backOff(attempt+1, timer) {
			return false
		}
	}
}

// sendBatch sends one batch and waits for its ack; on an ack it answers
// every waiter in the batch. ErrUnreachable: it could not be sent;
// ErrNoAnswer: no ack within CallTimeout; ErrClosed: the link is stopping.
func (p *peer) sendBatch(seq uint64, batch queue, timer *time.Timer) error {
	m := batchMsg{header: header{From: p.c.cfg.NodeName, Link: p.link, Seq: seq, Epoch: p.c.epoch}, Items: batch.items}
	msg := p.c.auth.seal(m.encode(), p.name)
	p.mu.Lock()
	node := p.node
	p.mu.Unlock()
	start := time.Now()
	if err := p.c.ml.SendReliable(node, msg); err != nil {
		p.c.stats.sendFailures.Add(1)
		p.stats.sendFailures.Add(1)
		p.c.log.Debug("link send failed", "peer", p.name, "seq", seq, "items", batch.len(), "err", err)
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
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
			p.stats.batches.Add(1)
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
			p.stats.ackTimeouts.Add(1)
			p.c.log.Debug("link ack timed out", "peer", p.name, "seq", seq, "items", batch.len())
			return ErrNoAnswer
		case <-p.stop:
			batch.fail(ErrUnreachable)
			return ErrClosed
		}
	}
}

// backOff waits after the failures-th failed attempt in a row (20ms,
// 40ms, ... up to CallTimeout); calls made meanwhile fail at once. False:
// the link is stopping.
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

// failed notes that a batch was given up: the peer's copy of our sessions
// may have missed deltas or chunks, so the next batch resyncs it.
func (p *peer) failed() {
	p.mu.Lock()
	p.needSnapshot = true
	p.mu.Unlock()
	p.hurry()
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

// receiveLoop takes the peer's batches in order and acks each one.
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

// receive takes a batch of the peer's, unless it is not from the member
// memberlist knows by the peer's name, late, or from an older link. It
// handles the items that have a reply (relay calls, evictions, requests)
// in order, acks the batch with their replies at once, then hands its
// table items (snapshot chunks, deltas) to the applier, in order: an ack
// says the batch arrived and will be applied, not that it was. A copy of
// the last batch taken (its ack was lost, or late) is acked again and not
// handled again. Then it releases the batch.
func (p *peer) receive(m *batchMsg) {
	defer m.release()
	p.mu.Lock()
	epoch, node := p.epoch, p.node
	p.mu.Unlock()
	if !sameRun(m.Epoch, epoch) {
		p.c.refuseIdentity("batch", m.From, m.Epoch, epoch)
		return
	}
	switch {
	case m.Epoch != p.inEpoch || m.Link > p.inLink: // a new run of the peer, or a new link of it
		p.inEpoch, p.inLink, p.inSeq, p.lastAck = m.Epoch, m.Link, 0, nil
	case m.Link < p.inLink:
		return // from an older link of the peer's
	case m.Seq == p.inSeq && p.lastAck != nil:
		p.c.stats.duplicates.Add(1)
		p.sendAck(node, p.lastAck)
		return
	case m.Seq < p.inSeq:
		return // late: the peer gave up on it and moved on
	}
	p.inSeq = m.Seq
	a := ackMsg{header: header{From: p.c.cfg.NodeName, Link: m.Link, Seq: m.Seq, Epoch: p.c.epoch}, Replies: make([][]byte, len(m.Items))}
	var table []item
	for i, it := range m.Items {
		if it.Kind == kindSnapshot || it.Kind == kindDelta {
			table = append(table, it) // the bodies alias the message, not the batch: they outlive release
			continue
		}
		a.Replies[i] = p.handleItemRecovered(it)
	}
	p.lastAck = p.c.auth.seal(a.encode(), p.name)
	p.sendAck(node, p.lastAck)
	if len(table) > 0 {
		select {
		case p.applyq <- table:
		case <-p.stop:
		}
	}
}

// sendAck sends a sealed ack to the peer.
func (p *peer) sendAck(node *memberlist.Node, ack []byte) {
	if err := p.c.ml.SendReliable(node, ack); err != nil {
		p.c.log.Debug("ack send failed", "peer", p.name, "err", err)
	}
}

// apply applies one batch's table items, in order. A batch with a
// snapshot chunk waits for its turn (Cluster.applying): the links apply
// chunks one at a time, so that a joiner learning of many members at once
// keeps one goroutine, not one per member, busy decoding and taking the
// table lock, and lookups are not left waiting behind a crowd of them.
func (p *peer) apply(items []item) {
	if slices.ContainsFunc(items, func(it item) bool { return it.Kind == kindSnapshot }) {
		select {
		case p.c.applying <- struct{}{}:
		case <-p.stop:
			return
		}
		defer func() { <-p.c.applying }()
	}
	for _, it := range items {
		p.handleItemRecovered(it)
	}
}

// applyLoop applies the table items of the peer's batches, in order.
func (p *peer) applyLoop() {
	defer p.c.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case items := <-p.applyq:
			p.apply(items)
		}
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

// handleSnapshotReq has the next batch to the peer start our snapshot,
// unless one is under way already (it answers the request: the peer gets
// all its chunks, in order, then the deltas after it) and the peer does
// not ask for one from the start (m.Restart).
func (p *peer) handleSnapshotReq(m snapshotReqMsg) {
	p.mu.Lock()
	if m.Restart || !p.snapshotting {
		p.needSnapshot = true
	}
	p.mu.Unlock()
	p.hurry()
}

// handleLeaving notes that the peer leaves on purpose: when gossip reports
// it gone, it is "left", not "dead".
func (p *peer) handleLeaving(leavingMsg) {
	p.c.mu.Lock()
	p.c.leaving[p.name] = time.Now()
	p.c.mu.Unlock()
}
