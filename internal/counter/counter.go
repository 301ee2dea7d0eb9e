// Package counter is a count that can be waited on: benchmarks count what
// their clients receive and wait, without polling, until it reaches a
// target.
package counter

import (
	"sync/atomic"
	"time"
)

// Counter is safe for concurrent use. Make it with New.
type Counter struct {
	n      atomic.Int64
	target atomic.Int64
	hit    chan struct{} // capacity 1
}

// New returns a zero count.
func New() *Counter { return &Counter{hit: make(chan struct{}, 1)} }

// Add counts one.
func (c *Counter) Add() {
	if c.n.Add(1) == c.target.Load() {
		select {
		case c.hit <- struct{}{}:
		default:
		}
	}
}

// Load returns the count.
func (c *Counter) Load() int64 { return c.n.Load() }

// WaitFor blocks until the count is at least target; false if limit passed
// first. One waiter at a time.
func (c *Counter) WaitFor(target int64, limit time.Duration) bool {
	c.target.Store(target)
	if c.n.Load() >= target {
		return true
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for c.n.Load() < target {
		select {
		case <-c.hit: // may be stale: the loop checks again
		case <-timer.C:
			return c.n.Load() >= target
		}
	}
	return true
}
