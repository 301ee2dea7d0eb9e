package cluster

// queue holds the items waiting to go over a link, in order, and beside
// each the channel of the caller waiting for its reply: nil for the items
// nobody waits for (table traffic). A batch is a queue too: its items are
// encoded as they are, without a copy.
type queue struct {
	items   []item
	waiters []chan callResult // buffered(1); waiters[i] waits for items[i]'s reply
}

// callResult is the reply to one item, or why there is none.
type callResult struct {
	data []byte
	err  error
}

func (q *queue) len() int { return len(q.items) }

func (q *queue) push(it item, w chan callResult) {
	q.items = append(q.items, it)
	q.waiters = append(q.waiters, w)
}

// moveTo moves entries from the front of q to the end of out, in order,
// while out is under the batch limits (maxBatchItems, and maxBatchBytes
// counting size bytes out holds already; one entry at least). Entries
// for which skip (if not nil) is true are passed over and stay in q, in
// order.
func (q *queue) moveTo(out *queue, size int, skip func(item) bool) {
	kept, i := 0, 0
	for ; i < len(q.items); i++ {
		it := q.items[i]
		if skip != nil && skip(it) {
			q.items[kept], q.waiters[kept] = it, q.waiters[i]
			kept++
			continue
		}
		if out.len() >= maxBatchItems || (size >= maxBatchBytes && out.len() > 0) {
			break
		}
		out.push(it, q.waiters[i])
		size += len(it.Body)
	}
	n := kept + copy(q.items[kept:], q.items[i:])
	copy(q.waiters[kept:], q.waiters[i:])
	clear(q.items[n:])
	clear(q.waiters[n:])
	q.items, q.waiters = q.items[:n], q.waiters[:n]
}

// keep keeps the entries for which ok is true, in order, and answers the
// others' waiters with err.
func (q *queue) keep(ok func(it item, w chan callResult) bool, err error) {
	n := 0
	for i, it := range q.items {
		w := q.waiters[i]
		if ok(it, w) {
			q.items[n], q.waiters[n] = it, w
			n++
		} else if w != nil {
			w <- callResult{err: err}
		}
	}
	clear(q.items[n:])
	clear(q.waiters[n:])
	q.items, q.waiters = q.items[:n], q.waiters[:n]
}

// fail answers every waiter with err.
func (q *queue) fail(err error) {
	for _, w := range q.waiters {
		if w != nil {
			w <- callResult{err: err}
		}
	}
}
