package throttle

import (
	"testing"
	"time"
)

func TestEvery(t *testing.T) {
	var e Every
	if n, ok := e.Allow(time.Hour); !ok || n != 1 {
		t.Fatalf("first event: %d, %v; want 1, true", n, ok)
	}
	for range 5 {
		if _, ok := e.Allow(time.Hour); ok {
			t.Fatal("an event within the interval was let through")
		}
	}
	// An interval of zero has always passed: the next event stands for
	// itself and the five held back.
	if n, ok := e.Allow(0); !ok || n != 6 {
		t.Fatalf("after the interval: %d, %v; want 6, true", n, ok)
	}
}
