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

// take removes the first n entries and returns them, in a queue of their own.
func (q *queue) take(n int) queue {
	out := queue{items: make([]item, n), waiters: make([]chan callResult, n)}
	copy(out.items, q.items)
	copy(out.waiters, q.waiters)
	rest := copy(q.items, q.items[n:])
	copy(q.waiters, q.waiters[n:])
	clear(q.items[rest:])
	clear(q.waiters[rest:])
	q.items, q.waiters = q.items[:rest], q.waiters[:rest]
	return out
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
