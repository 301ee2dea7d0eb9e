package upstream_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"wsmesh/session"
	"wsmesh/upstream"
)

// BenchmarkSender measures client messages through a Sender to a backend
// on loopback that answers 200 at once (an httptest server in this
// process): events the backend accepted per second, with batches of up to
// 100 events per POST and with one POST per event, side by side. An op is
// one message, queued and acked. The producer keeps at most half the
// queue waiting, as clients waiting for acks would, so no message is
// refused.
//
//	go test -run '^$' -bench Sender -count 10 ./upstream > sender.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /max_batch sender.txt
func BenchmarkSender(b *testing.B) {
	for _, batch := range []int{100, 1} {
		b.Run(fmt.Sprintf("max_batch=%d", batch), func(b *testing.B) { benchSender(b, batch) })
	}
}

func benchSender(b *testing.B, maxBatch int) {
	var posts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		posts.Add(1)
	}))
	defer srv.Close()

	const queue = 10000
	window := make(chan struct{}, queue/2) // a slot per message not acked yet
	var acked atomic.Int64
	done := make(chan struct{})
	want := int64(b.N)
	s, err := upstream.New(upstream.Config{
		URL: srv.URL + "/events", Secret: []byte("bench-upstream-secret-0123456789abcdef"),
		MaxBatch: maxBatch, Queue: queue, Node: "bench", Timeout: 5 * time.Second,
		Events: []string{upstream.TypeMessage},
		Deliver: func(_, _ string, _ []byte) {
			<-window
			if acked.Add(1) == want {
				close(done)
			}
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			b.Errorf("Close: %v", err)
		}
	}()
	infos := make([]session.Info, 100)
	for i := range infos {
		infos[i] = session.Info{Session: fmt.Sprintf("s%03d", i), User: fmt.Sprint(i), Device: "web", Connected: time.Now()}
	}
	data := []byte(`{"text":"hello, backend","n":12345}`)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		window <- struct{}{}
		if err := s.Message(infos[i%len(infos)], "c-1", data); err != nil {
			b.Fatalf("message %d: %v", i, err)
		}
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d messages acked after a minute", acked.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/float64(posts.Load()), "events/POST")
	if st := s.Stats(); st.Sent[upstream.TypeMessage] != uint64(b.N) || st.Retried != 0 {
		b.Fatalf("stats %+v, want %d messages sent, no retry", st, b.N)
	}
}
