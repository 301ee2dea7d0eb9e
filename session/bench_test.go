package session

import (
	"log/slog"
	"strconv"
	"testing"
)

// benchData is a 200-byte JSON value, the data of a typical message.
var benchData = func() []byte {
	b := []byte(`{"kind":"chat","from":"user-4711","room":"general","text":"`)
	tail := `","ts":1732330000123}`
	for len(b)+len(tail) < 200 {
		b = append(b, 'x')
	}
	return append(b, tail...)
}()

const benchMsgID = "01936a6c-2f4e-7a3b-9c1d-0123456789ab" // a UUIDv7, as relay makes them

var benchFrameSink []byte

// BenchmarkMessageFrame builds the frame of one message with 200 bytes of
// data; relay builds it once per POST /send, whatever the recipient count.
func BenchmarkMessageFrame(b *testing.B) {
	if len(benchData) != 200 {
		b.Fatalf("benchData is %d bytes", len(benchData))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchData)))
	for b.Loop() {
		benchFrameSink = MessageFrame(benchMsgID, benchData)
	}
}

// benchHub is a Hub that never serves a connection: sessions are added to
// it by hand.
func benchHub(tb testing.TB, sendQueue int) *Hub {
	tb.Helper()
	auth, err := NewAuthenticator([]byte("bench-secret-0123456789-abcdefghijklmnop"))
	if err != nil {
		tb.Fatal(err)
	}
	h, err := New(Config{Auth: auth, SendQueue: sendQueue, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// benchSession is a Session without a connection. It says a writer is
// running, as one is under load, so Enqueue only queues: benchDrain stands in
// for that writer taking the queue.
func benchSession(h *Hub, user string) *Session {
	return &Session{hub: h, info: Info{Session: user, User: user, Device: DefaultDevice}, writing: true}
}

// benchDrain empties s's queue, as the writer does when it takes a batch.
func benchDrain(s *Session) {
	s.mu.Lock()
	clear(s.queue)
	s.queue = s.queue[:0]
	s.messages = 0
	s.mu.Unlock()
}

// BenchmarkEnqueue measures Session.Enqueue, the per-recipient cost of a
// send on the node that holds the session, without the write to the
// socket: the queue is drained every 128 frames, half the default queue.
// "parallel" has every benchmark goroutine enqueue to the same session.
func BenchmarkEnqueue(b *testing.B) {
	frame := MessageFrame(benchMsgID, benchData)
	b.Run("serial", func(b *testing.B) {
		s := benchSession(benchHub(b, 256), "u")
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := s.Enqueue(frame); err != nil {
				b.Fatal(err)
			}
			if i++; i%128 == 0 {
				benchDrain(s)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := benchSession(benchHub(b, 1<<30), "u")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if err := s.Enqueue(frame); err != nil {
					b.Error(err)
					return
				}
				if i++; i%128 == 0 {
					benchDrain(s)
				}
			}
		})
	})
}

// BenchmarkDeliver measures Hub.Deliver (shard lookup, then Enqueue) over
// 1000 connectionless sessions, one user per op, round robin: what POST
// /send costs per recipient on the node, before any socket write.
func BenchmarkDeliver(b *testing.B) {
	const users = 1000
	h := benchHub(b, 1<<30)
	names := make([]string, users)
	sessions := make([]*Session, users)
	for i := range users {
		names[i] = "u" + strconv.Itoa(i)
		sessions[i] = benchSession(h, names[i])
		h.register(sessions[i])
	}
	if h.Len() != users {
		b.Fatalf("hub has %d sessions, want %d", h.Len(), users)
	}
	frame := MessageFrame(benchMsgID, benchData)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if d := h.Deliver(names[i], "", frame); len(d) != 1 || d[0].Err != nil {
			b.Fatalf("deliver to %s: %+v", names[i], d)
		}
		if i++; i == users {
			i = 0
			if sessions[0].messages >= 128 {
				for _, s := range sessions {
					benchDrain(s)
				}
			}
		}
	}
}
