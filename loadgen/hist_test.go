package loadgen

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// exactQuantile is the ceil(q*n)-th smallest value of sorted.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := max(int(math.Ceil(q*float64(len(sorted)))), 1)
	return sorted[rank-1]
}

// checkQuantiles compares h's quantiles with the exact ones of values: never
// below, at most 1/128 above.
func checkQuantiles(t *testing.T, h *Histogram, values []int64) {
	t.Helper()
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	for _, q := range []float64{0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1} {
		want := exactQuantile(sorted, q)
		got := int64(h.Quantile(q))
		if got < want || float64(got-want) > float64(want)/128 {
			t.Errorf("q%.3f = %d, want %d (at most 1/128 above)", q, got, want)
		}
	}
	if h.Count() != uint64(len(values)) {
		t.Errorf("count %d, want %d", h.Count(), len(values))
	}
	if h.Min() != uint64(sorted[0]) || h.Max() != uint64(sorted[len(sorted)-1]) {
		t.Errorf("min %d max %d, want %d %d", h.Min(), h.Max(), sorted[0], sorted[len(sorted)-1])
	}
	var sum float64
	for _, v := range values {
		sum += float64(v)
	}
	if mean := sum / float64(len(values)); math.Abs(h.Mean()-mean) > 1e-6*mean {
		t.Errorf("mean %f, want %f", h.Mean(), mean)
	}
}

func TestHistogramUniform(t *testing.T) {
	h := NewHistogram()
	var values []int64
	for v := int64(1); v <= 100000; v++ {
		h.Record(v)
		values = append(values, v)
	}
	checkQuantiles(t, h, values)
	// The known answers, for the record: ranks 50000, 90000, 99000 of 1..100000.
	for q, want := range map[float64]uint64{0.5: 50000, 0.9: 90000, 0.99: 99000} {
		if got := h.Quantile(q); got < want || got > want+want/128 {
			t.Errorf("q%.2f = %d, want %d within 1/128", q, got, want)
		}
	}
}

func TestHistogramLatencyLike(t *testing.T) {
	// Mostly around 1 ms, a tail to 100 ms, a few seconds-long outliers:
	// values from 1 µs to 5 s, in nanoseconds.
	r := rand.New(rand.NewPCG(1, 2))
	h := NewHistogram()
	var values []int64
	for i := range 200000 {
		var v int64
		switch {
		case i%1000 == 0:
			v = 1e9 + r.Int64N(4e9)
		case i%20 == 0:
			v = int64(math.Exp(r.Float64()*math.Log(1e8/1e6)) * 1e6)
		default:
			v = 1000 + int64(r.NormFloat64()*2e5+1e6)
		}
		v = max(v, 1000)
		h.Record(v)
		values = append(values, v)
	}
	checkQuantiles(t, h, values)
}

func TestHistogramSmallExact(t *testing.T) {
	h := NewHistogram()
	for _, v := range []int64{5, 1, 3, 2, 4} {
		h.Record(v)
	}
	// Values below 256 have a bucket each: quantiles are exact.
	for q, want := range map[float64]uint64{0: 1, 0.2: 1, 0.4: 2, 0.5: 3, 0.8: 4, 1: 5} {
		if got := h.Quantile(q); got != want {
			t.Errorf("q%.1f = %d, want %d", q, got, want)
		}
	}
}

func TestHistogramEdges(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.5) != 0 || h.Min() != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram: want zeros")
	}
	if l := h.Latency(); l.Count != 0 || l.P99MS != 0 {
		t.Fatalf("empty latency: %+v", l)
	}
	h.Record(-5) // a clock step: counts as 0
	h.Record(math.MaxInt64)
	if h.Min() != 0 || h.Max() != math.MaxInt64 || h.Quantile(1) != math.MaxInt64 || h.Quantile(0.5) != 0 {
		t.Fatalf("min %d max %d q1 %d q.5 %d", h.Min(), h.Max(), h.Quantile(1), h.Quantile(0.5))
	}
	// Every bucket's range holds the values that map to it, and the ranges
	// tile the uint64 line.
	var next uint64
	for i := range numBuckets {
		lo, hi := bucketRange(i)
		if lo != next || hi < lo || bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d: [%d, %d], want it to start at %d and map back", i, lo, hi, next)
		}
		if lo >= subCount && float64(hi-lo+1) > float64(lo)/128 {
			t.Fatalf("bucket %d: [%d, %d] wider than 1/128 of its values", i, lo, hi)
		}
		next = hi + 1
	}
	if next != 0 { // wrapped past MaxUint64
		t.Fatalf("buckets end at %d, want the whole uint64 range", next-1)
	}
}

func TestHistogramMergeAndSnapshot(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	var values []int64
	for i := range 50000 {
		v := r.Int64N(1e9)
		values = append(values, v)
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	// Through JSON, as from a worker.
	merged := NewHistogram()
	for _, h := range []*Histogram{a, b} {
		raw, err := json.Marshal(h.Snapshot())
		if err != nil {
			t.Fatal(err)
		}
		var s HistSnapshot
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		if err := merged.MergeSnapshot(s); err != nil {
			t.Fatal(err)
		}
	}
	if merged.Snapshot().Buckets == nil || !slices.Equal(merged.Snapshot().Buckets, all.Snapshot().Buckets) {
		t.Fatal("merged snapshots differ from one histogram of every value")
	}
	checkQuantiles(t, merged, values)
	direct := NewHistogram()
	direct.Merge(a)
	direct.Merge(b)
	checkQuantiles(t, direct, values)

	if err := merged.MergeSnapshot(HistSnapshot{N: 2, Buckets: [][2]uint64{{1, 1}}}); err == nil {
		t.Fatal("a snapshot whose counts do not add up was accepted")
	}
	if err := merged.MergeSnapshot(HistSnapshot{N: 1, Buckets: [][2]uint64{{numBuckets, 1}}}); err == nil {
		t.Fatal("a snapshot with a bucket out of range was accepted")
	}

	s := a.SnapshotAndReset()
	if s.N == 0 || a.Count() != 0 || a.Max() != 0 || a.Quantile(0.5) != 0 {
		t.Fatalf("after SnapshotAndReset: snapshot n %d, histogram n %d max %d", s.N, a.Count(), a.Max())
	}
	a.Record(7)
	if a.Min() != 7 || a.Max() != 7 {
		t.Fatalf("after reset and one value: min %d max %d", a.Min(), a.Max())
	}
}

func TestHistogramConcurrent(t *testing.T) {
	h := NewHistogram()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10000 {
				h.Record(int64(g*10000 + i + 1))
			}
		})
	}
	wg.Wait()
	values := make([]int64, 80000)
	for i := range values {
		values[i] = int64(i + 1)
	}
	checkQuantiles(t, h, values)
}

func TestLatencyMS(t *testing.T) {
	h := NewHistogram()
	h.Record(1_500_000) // 1.5 ms
	l := h.Latency()
	if l.Count != 1 || l.P50MS < 1.5 || l.P50MS > 1.52 || l.MaxMS != 1.5 || l.MinMS != 1.5 || l.MeanMS != 1.5 {
		t.Fatalf("%+v", l)
	}
	for ns, want := range map[uint64]string{850_000: "850µs", 3_214_567: "3.21ms", 1_234_000_000: "1.234s"} {
		if got := fmtNS(ns); got != want {
			t.Errorf("fmtNS(%d) = %q, want %q", ns, got, want)
		}
	}
}
