package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"wsmesh/cluster"
	"wsmesh/session"
)

// BenchmarkPresence answers POST /presence for 1000 users (half of them
// online, with two devices each) on a node whose table holds 100k
// sessions, through the whole handler: body decode, table lookups, JSON
// answer. It reports answers/s and the p99 of one answer.
func BenchmarkPresence(b *testing.B) {
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl, err := cluster.New(cluster.Config{NodeName: "n1", Bind: "127.0.0.1:0", LinkKey: []byte("presence-bench-link-key-32-bytes"), Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	hub, err := session.New(session.Config{Auth: testAuth(b), Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Hub: hub, Cluster: cl, MaxUsersPerSend: 1000, Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	if err := cl.Start(s); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = cl.Leave(ctx)
	})
	const sessions = 100_000
	for i := range sessions {
		cl.AddLocal(cluster.LocalSession{User: fmt.Sprintf("u%d", i/2), Device: []string{"web", "app"}[i%2], Session: fmt.Sprintf("s%d", i), Stamp: cl.Now()})
	}
	if n := cl.TableSize(); n != sessions {
		b.Fatalf("table holds %d sessions, want %d", n, sessions)
	}
	users := make([]string, 1000)
	for i := range users {
		users[i] = fmt.Sprintf(`"u%d"`, i*49) // online: u0 to u48951 of the 50k users in the table
		if i%2 == 1 {
			users[i] = fmt.Sprintf(`"offline-%d"`, i)
		}
	}
	body := `{"users":[` + strings.Join(users, ",") + `]}`

	var took []time.Duration
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		t0 := time.Now()
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/presence", strings.NewReader(body)))
		took = append(took, time.Since(t0))
		if w.Code != http.StatusOK {
			b.Fatalf("presence: %d %s", w.Code, w.Body)
		}
	}
	elapsed := time.Since(start)
	slices.Sort(took)
	b.ReportMetric(float64(len(took))/elapsed.Seconds(), "answers/s")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}
