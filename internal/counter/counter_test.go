package counter

import (
	"sync"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	c := New()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 250 {
				c.Add()
			}
		})
	}
	if !c.WaitFor(1000, 10*time.Second) {
		t.Fatalf("count %d, want 1000", c.Load())
	}
	wg.Wait()
	if c.WaitFor(1001, 10*time.Millisecond) {
		t.Fatal("WaitFor reported a count never reached")
	}
}
