package loadgen

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram layout, in the manner of HdrHistogram: values below subCount are
// counted exactly; above, every power of two [2^k, 2^(k+1)) is split into
// subCount/2 equal buckets, so a bucket is narrower than 1/(subCount/2) of
// any value in it: with subBits = 8, quantiles are within 0.79% (1/128).
const (
	subBits    = 8
	subCount   = 1 << subBits // 256
	subHalf    = subCount / 2
	numBuckets = (64-subBits)*subHalf + subCount // every uint64: 7424 buckets, 58 KiB
)

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits // v>>shift is in [subHalf, subCount)
	return shift*subHalf + int(v>>uint(shift))
}

// bucketRange returns the smallest and largest value counted in bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i)
	}
	shift := i/subHalf - 1
	m := uint64(i%subHalf + subHalf)
	lo = m << uint(shift)
	return lo, lo + (uint64(1) << uint(shift)) - 1
}

// Histogram is a log-bucketed histogram of non-negative int64 values
// (latencies in nanoseconds here). Record is safe for concurrent use and
// lock-free; reading (Quantile, Snapshot, Merge into it) while others record
// sees each counter atomically but not the whole histogram at one instant,
// which only matters for progress displays.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	min    atomic.Uint64 // valid when n > 0
	max    atomic.Uint64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(math.MaxUint64)
	return h
}

// Record counts one value; negative values count as 0.
func (h *Histogram) Record(v int64) {
	u := uint64(0)
	if v > 0 {
		u = uint64(v)
	}
	h.RecordN(u, 1)
}

// RecordN counts the value u, n times.
func (h *Histogram) RecordN(u, n uint64) {
	if n == 0 {
		return
	}
	h.counts[bucketOf(u)].Add(n)
	h.n.Add(n)
	h.sum.Add(u * n)
	for {
		m := h.min.Load()
		if u >= m || h.min.CompareAndSwap(m, u) {
			break
		}
	}
	for {
		m := h.max.Load()
		if u <= m || h.max.CompareAndSwap(m, u) {
			break
		}
	}
}

// Count returns the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max returns the largest value recorded, exactly (0 if none).
func (h *Histogram) Max() uint64 { return h.max.Load() }

// Min returns the smallest value recorded, exactly (0 if none).
func (h *Histogram) Min() uint64 {
	if h.n.Load() == 0 {
		return 0
	}
	return h.min.Load()
}

// Mean returns the exact mean of the values recorded (0 if none).
func (h *Histogram) Mean() float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile returns the value at quantile q in [0, 1]: the largest value of
// the bucket holding the ceil(q*n)-th smallest value, capped at the exact
// maximum (so Quantile(1) == Max()). It overstates the true value by less
// than 0.79% and never understates it. 0 if the histogram is empty.
func (h *Histogram) Quantile(q float64) uint64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	mx := h.max.Load()
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			_, hi := bucketRange(i)
			return min(hi, mx)
		}
	}
	return mx // counts raced ahead of n: only while recording goes on
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n.Load() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.mergeTotals(o.n.Load(), o.sum.Load(), o.Min(), o.Max())
}

func (h *Histogram) mergeTotals(n, sum, lo, hi uint64) {
	h.n.Add(n)
	h.sum.Add(sum)
	for {
		m := h.min.Load()
		if lo >= m || h.min.CompareAndSwap(m, lo) {
			break
		}
	}
	for {
		m := h.max.Load()
		if hi <= m || h.max.CompareAndSwap(m, hi) {
			break
		}
	}
}

// HistSnapshot is a histogram as JSON: only the buckets that hold values,
// as [bucket index, count] pairs. Workers send theirs to the parent.
type HistSnapshot struct {
	N       uint64      `json:"n"`
	Sum     uint64      `json:"sum"`
	Min     uint64      `json:"min"`
	Max     uint64      `json:"max"`
	Buckets [][2]uint64 `json:"b,omitempty"`
}

// Snapshot returns h's current contents.
func (h *Histogram) Snapshot() HistSnapshot {
	s := HistSnapshot{N: h.n.Load(), Sum: h.sum.Load(), Min: h.Min(), Max: h.Max()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			s.Buckets = append(s.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return s
}

// SnapshotAndReset returns h's contents and empties it, for interval
// histograms; a value recorded meanwhile lands in this interval or the next.
func (h *Histogram) SnapshotAndReset() HistSnapshot {
	s := HistSnapshot{N: h.n.Swap(0), Sum: h.sum.Swap(0), Min: h.min.Swap(math.MaxUint64), Max: h.max.Swap(0)}
	if s.N == 0 {
		s.Min = 0
	}
	for i := range h.counts {
		if c := h.counts[i].Swap(0); c > 0 {
			s.Buckets = append(s.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return s
}

// MergeSnapshot adds a snapshot's values to h.
func (h *Histogram) MergeSnapshot(s HistSnapshot) error {
	var total uint64
	for _, b := range s.Buckets {
		if b[0] >= numBuckets {
			return fmt.Errorf("histogram snapshot: bucket %d out of range", b[0])
		}
		total += b[1]
	}
	if total != s.N {
		return errors.New("histogram snapshot: bucket counts do not add up to n")
	}
	if s.N == 0 {
		return nil
	}
	for _, b := range s.Buckets {
		h.counts[b[0]].Add(b[1])
	}
	h.mergeTotals(s.N, s.Sum, s.Min, s.Max)
	return nil
}

// Latency is a histogram of durations in the summary, in milliseconds.
type Latency struct {
	Count  uint64  `json:"count"`
	MinMS  float64 `json:"min_ms"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p999_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// Latency summarises a histogram of nanoseconds.
func (h *Histogram) Latency() Latency {
	return Latency{
		Count:  h.Count(),
		MinMS:  nsToMS(float64(h.Min())),
		MeanMS: nsToMS(h.Mean()),
		P50MS:  nsToMS(float64(h.Quantile(0.50))),
		P90MS:  nsToMS(float64(h.Quantile(0.90))),
		P99MS:  nsToMS(float64(h.Quantile(0.99))),
		P999MS: nsToMS(float64(h.Quantile(0.999))),
		MaxMS:  nsToMS(float64(h.Max())),
	}
}

// nsToMS converts nanoseconds to milliseconds, rounded to the microsecond.
func nsToMS(ns float64) float64 { return math.Round(ns/1e3) / 1e3 }

// fmtNS formats nanoseconds for humans: "850µs", "3.21ms", "1.2s".
func fmtNS(ns uint64) string {
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}
