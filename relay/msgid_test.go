package relay

import (
	"encoding/hex"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// uuidV7 is the 8-4-4-4-12 lowercase hex layout with version 7 and variant 10.
var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// idFields decodes an id's unix_ts_ms and 12-bit counter (rand_a).
func idFields(t *testing.T, id string) (ms int64, seq uint16) {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	if err != nil || len(b) != 16 {
		t.Fatalf("id %q: not 16 hex bytes: %v", id, err)
	}
	for i := 0; i < 6; i++ {
		ms = ms<<8 | int64(b[i])
	}
	if b[6]>>4 != 7 {
		t.Fatalf("id %q: version nibble %x, want 7", id, b[6]>>4)
	}
	if b[8]>>6 != 0b10 {
		t.Fatalf("id %q: variant bits %02b, want 10", id, b[8]>>6)
	}
	return ms, uint16(b[6]&0x0f)<<8 | uint16(b[7])
}

func TestIDSourceSequential(t *testing.T) {
	const n = 10000
	var g idSource
	start := time.Now().UnixMilli()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = g.next()
	}
	end := time.Now().UnixMilli()

	seen := make(map[string]bool, n)
	for i, id := range ids {
		if !uuidV7.MatchString(id) {
			t.Fatalf("id %d %q is not a UUIDv7", i, id)
		}
		if seen[id] {
			t.Fatalf("id %d %q repeats", i, id)
		}
		seen[id] = true
		if i > 0 && ids[i-1] >= id {
			t.Fatalf("ids not strictly increasing at %d: %q then %q", i, ids[i-1], id)
		}
		ms, _ := idFields(t, id)
		// A counter overflow may borrow at most one ms per 4096 ids.
		if ms < start || ms > end+n/4096+1 {
			t.Fatalf("id %d %q: timestamp %d outside [%d, %d]", i, id, ms, start, end+n/4096+1)
		}
	}
}

func TestIDSourceConcurrent(t *testing.T) {
	const workers, per = 4, 2500
	var g idSource
	out := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := make([]string, per)
			for i := range ids {
				ids[i] = g.next()
			}
			out[w] = ids
		}()
	}
	wg.Wait()

	seen := make(map[string]bool, workers*per)
	for w, ids := range out {
		for i, id := range ids {
			if !uuidV7.MatchString(id) {
				t.Fatalf("worker %d id %d %q is not a UUIDv7", w, i, id)
			}
			if seen[id] {
				t.Fatalf("worker %d id %d %q repeats", w, i, id)
			}
			seen[id] = true
			// Each goroutine's own ids are in the order the lock handed them out.
			if i > 0 && ids[i-1] >= id {
				t.Fatalf("worker %d: ids not increasing at %d: %q then %q", w, i, ids[i-1], id)
			}
		}
	}
	if len(seen) != workers*per {
		t.Fatalf("got %d unique ids, want %d", len(seen), workers*per)
	}
}
