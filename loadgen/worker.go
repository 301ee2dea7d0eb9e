package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lxzan/gws"
	"golang.org/x/sys/unix"

	"wsmesh/session"
)

// The parent and its workers speak JSON lines: the parent writes toWorker
// messages to a worker's stdin ("start" once, then "report", with -room
// "join" once, and finally "stop"); the worker writes fromWorker messages
// to its stdout ("connected" once every client has been dialled, "report"
// for each "report", "final" for "stop", or "error"). A worker whose stdin
// closes (the parent is gone) closes its connections and exits.

// clientSpec is one client a worker opens.
type clientSpec struct {
	User   string `json:"u"`
	Device string `json:"d"`
	Addr   string `json:"a"`           // the node's HTTP listener, host:port
	Source string `json:"s,omitempty"` // source IP to dial from
}

type workerStart struct {
	Secret      string        `json:"secret"` // jwt_secret to mint client tokens
	TokenTTL    time.Duration `json:"token_ttl"`
	ConnectRate float64       `json:"connect_rate"` // this worker's share; also of joins
	Clients     []clientSpec  `json:"clients"`
	// Room, if set, is in every client's token (rooms claim), and "join"
	// makes each client send {"type":"join","room":Room}. The worker then
	// also keeps, per sequence number, the largest latency it saw.
	Room string `json:"room,omitempty"`
}

type toWorker struct {
	Op     string       `json:"op"`               // start, report, join, stop
	Window bool         `json:"window,omitempty"` // report: with the latencies since the last such report
	Start  *workerStart `json:"start,omitempty"`
}

type fromWorker struct {
	Type  string `json:"type"` // connected, report, final, error
	Error string `json:"error,omitempty"`
	PID   int    `json:"pid,omitempty"`

	Opened    int64            `json:"opened"`
	Failed    int64            `json:"failed"`
	Dropped   int64            `json:"dropped"`           // closed by the server or the network
	Closes    map[string]int64 `json:"closes,omitempty"`  // why: close code or "network"
	ConnectNS int64            `json:"connect_ns"`        // first dial to last handshake
	Errors    []string         `json:"errors,omitempty"`  // the first connect errors
	Received  int64            `json:"received"`          // message frames with our data
	Other     int64            `json:"other"`             // other frames (pong, evicted)
	Bad       int64            `json:"bad"`               // message frames whose data is not ours
	Negative  int64            `json:"negative"`          // latencies below 0 (clock stepped), counted as 0
	Window    *HistSnapshot    `json:"window,omitempty"`  // report: latencies since the last report
	Hist      *HistSnapshot    `json:"hist,omitempty"`    // final: every latency
	Seqs      []byte           `json:"seqs,omitempty"`    // final: receptions per sequence number, uint32 little endian
	FirstRecv int64            `json:"first_recv_ns"`     // unix ns of the first and last message
	LastRecv  int64            `json:"last_recv_ns"`      // received
	RSSKiB    int64            `json:"rss_kib,omitempty"` // final: the worker's VmRSS
	CPUNS     int64            `json:"cpu_ns,omitempty"`  // final: the worker's CPU time

	// With a room.
	Joined     int64         `json:"joined,omitempty"`      // "joined" frames received
	JoinErrors int64         `json:"join_errors,omitempty"` // error frames answering a join
	JoinHist   *HistSnapshot `json:"join_hist,omitempty"`   // final: join frame sent → joined received
	Last       []byte        `json:"last,omitempty"`        // final: per sequence number, the largest latency (ns), int64 little endian
}

// seqCounts counts per sequence number, lock-free, in chunks allocated on
// first use.
type seqCounts struct {
	chunks [(maxMessages + seqChunk - 1) / seqChunk]atomic.Pointer[[seqChunk]atomic.Uint32]
	top    atomic.Int64 // highest sequence number counted + 1
}

const seqChunk = 1 << 16

func (s *seqCounts) add(seq int64, n uint32) bool {
	if seq < 0 || seq >= maxMessages {
		return false
	}
	p := &s.chunks[seq/seqChunk]
	c := p.Load()
	if c == nil {
		p.CompareAndSwap(nil, new([seqChunk]atomic.Uint32))
		c = p.Load()
	}
	c[seq%seqChunk].Add(n)
	for {
		t := s.top.Load()
		if seq < t || s.top.CompareAndSwap(t, seq+1) {
			return true
		}
	}
}

func (s *seqCounts) get(seq int64) uint32 {
	if seq < 0 || seq >= maxMessages {
		return 0
	}
	if c := s.chunks[seq/seqChunk].Load(); c != nil {
		return c[seq%seqChunk].Load()
	}
	return 0
}

// encode returns the counts of 0..top-1 as uint32 little endian.
func (s *seqCounts) encode() []byte {
	top := s.top.Load()
	b := make([]byte, 4*top)
	for i := range top {
		binary.LittleEndian.PutUint32(b[4*i:], s.get(i))
	}
	return b
}

// addEncoded adds counts made by encode.
func (s *seqCounts) addEncoded(b []byte) error {
	if len(b)%4 != 0 || len(b)/4 > maxMessages {
		return fmt.Errorf("sequence counts: %d bytes", len(b))
	}
	for i := range int64(len(b) / 4) {
		if n := binary.LittleEndian.Uint32(b[4*i:]); n > 0 {
			s.add(i, n)
		}
	}
	return nil
}

// seqMax keeps a maximum per sequence number, lock-free, in chunks
// allocated on first use (as seqCounts does).
type seqMax struct {
	chunks [(maxMessages + seqChunk - 1) / seqChunk]atomic.Pointer[[seqChunk]atomic.Int64]
	top    atomic.Int64
}

// raise sets seq's value to v if that is more; v must be > 0.
func (s *seqMax) raise(seq, v int64) {
	if seq < 0 || seq >= maxMessages {
		return
	}
	p := &s.chunks[seq/seqChunk]
	c := p.Load()
	if c == nil {
		p.CompareAndSwap(nil, new([seqChunk]atomic.Int64))
		c = p.Load()
	}
	for e := &c[seq%seqChunk]; ; {
		old := e.Load()
		if v <= old || e.CompareAndSwap(old, v) {
			break
		}
	}
	for {
		t := s.top.Load()
		if seq < t || s.top.CompareAndSwap(t, seq+1) {
			return
		}
	}
}

func (s *seqMax) get(seq int64) int64 {
	if seq < 0 || seq >= maxMessages {
		return 0
	}
	if c := s.chunks[seq/seqChunk].Load(); c != nil {
		return c[seq%seqChunk].Load()
	}
	return 0
}

// encode returns the values of 0..top-1 as int64 little endian.
func (s *seqMax) encode() []byte {
	top := s.top.Load()
	b := make([]byte, 8*top)
	for i := range top {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(s.get(i)))
	}
	return b
}

// raiseEncoded takes the maxima with values made by encode.
func (s *seqMax) raiseEncoded(b []byte) error {
	if len(b)%8 != 0 || len(b)/8 > maxMessages {
		return fmt.Errorf("sequence maxima: %d bytes", len(b))
	}
	for i := range int64(len(b) / 8) {
		if v := int64(binary.LittleEndian.Uint64(b[8*i:])); v > 0 {
			s.raise(i, v)
		}
	}
	return nil
}

// worker holds one process's share of the clients.
type worker struct {
	outMu sync.Mutex
	out   *json.Encoder

	hist, window *Histogram
	seqs         seqCounts

	received, other, bad, negative atomic.Int64
	firstRecv, lastRecv            atomic.Int64
	opened, failed, dropped        atomic.Int64
	connectNS                      atomic.Int64

	// With a room.
	room               string
	joinHist           *Histogram
	last               seqMax
	joined, joinErrors atomic.Int64
	joining            sync.WaitGroup // the join goroutine

	mu       sync.Mutex
	conns    []*gws.Conn
	closes   map[string]int64
	errors   []string
	stopping atomic.Bool
	loops    sync.WaitGroup
}

func newWorker(out io.Writer) *worker {
	return &worker{out: json.NewEncoder(out), hist: NewHistogram(), window: NewHistogram(), joinHist: NewHistogram(), closes: map[string]int64{}}
}

func (w *worker) send(m fromWorker) error {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	return w.out.Encode(m)
}

// WorkerMain runs a client worker (`wsmesh bench -worker`): it reads its
// orders from in and reports to out, as the parent bench process directs.
// It returns the process exit code.
func WorkerMain(ctx context.Context, in io.Reader, out io.Writer) int {
	w := newWorker(out)
	dec := json.NewDecoder(bufio.NewReader(in))
	var first toWorker
	if err := dec.Decode(&first); err != nil || first.Op != "start" || first.Start == nil {
		_ = w.send(fromWorker{Type: "error", Error: fmt.Sprintf("worker: want a start message first (%v)", err)})
		return 1
	}
	st := first.Start
	if st.ConnectRate <= 0 || st.TokenTTL <= 0 {
		_ = w.send(fromWorker{Type: "error", Error: "worker: start message without connect rate or token ttl"})
		return 1
	}
	auth, err := session.NewAuthenticator([]byte(st.Secret))
	if err != nil {
		_ = w.send(fromWorker{Type: "error", Error: "worker: " + err.Error()})
		return 1
	}
	w.room = st.Room
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer w.joining.Wait()
	connected := make(chan struct{})
	go func() {
		defer close(connected)
		w.connect(cctx, auth, st)
		if cctx.Err() == nil {
			m := w.counts("connected")
			m.Errors = w.firstErrors()
			_ = w.send(m)
		}
	}()
	ops := make(chan toWorker)
	go func() {
		defer close(ops)
		for {
			var m toWorker
			if err := dec.Decode(&m); err != nil {
				return
			}
			select {
			case ops <- m:
			case <-cctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case m, ok := <-ops:
			switch {
			case !ok: // the parent is gone
				cancel()
				<-connected
				w.joining.Wait()
				w.stop()
				return 1
			case m.Op == "join":
				if w.room == "" {
					_ = w.send(fromWorker{Type: "error", Error: "worker: join without a room"})
					continue
				}
				<-connected // the parent asks once every worker reported connected
				w.joining.Go(func() { w.joinAll(cctx, st.ConnectRate) })
			case m.Op == "report":
				r := w.counts("report")
				if m.Window {
					win := w.window.SnapshotAndReset()
					r.Window = &win
				}
				if err := w.send(r); err != nil {
					cancel()
					<-connected
					w.joining.Wait()
					w.stop()
					return 1
				}
			case m.Op == "stop":
				cancel()
				<-connected
				w.joining.Wait()
				w.stop()
				f := w.counts("final")
				h := w.hist.Snapshot()
				f.Hist, f.Seqs, f.Errors = &h, w.seqs.encode(), w.firstErrors()
				if w.room != "" {
					jh := w.joinHist.Snapshot()
					f.JoinHist, f.Last = &jh, w.last.encode()
				}
				f.RSSKiB, _ = vmRSSKiB(os.Getpid())
				f.CPUNS = int64(selfCPU())
				if err := w.send(f); err != nil {
					return 1
				}
				return 0
			default:
				_ = w.send(fromWorker{Type: "error", Error: fmt.Sprintf("worker: unknown op %q", m.Op)})
			}
		case <-ctx.Done(): // SIGTERM
			cancel()
			<-connected
			w.joining.Wait()
			w.stop()
			return 1
		}
	}
}

func (w *worker) counts(typ string) fromWorker {
	m := fromWorker{
		Type: typ, PID: os.Getpid(),
		Opened: w.opened.Load(), Failed: w.failed.Load(), Dropped: w.dropped.Load(),
		ConnectNS: w.connectNS.Load(),
		Received:  w.received.Load(), Other: w.other.Load(), Bad: w.bad.Load(), Negative: w.negative.Load(),
		FirstRecv: w.firstRecv.Load(), LastRecv: w.lastRecv.Load(),
		Joined: w.joined.Load(), JoinErrors: w.joinErrors.Load(),
	}
	w.mu.Lock()
	if len(w.closes) > 0 {
		m.Closes = make(map[string]int64, len(w.closes))
		for k, v := range w.closes {
			m.Closes[k] = v
		}
	}
	w.mu.Unlock()
	return m
}

func (w *worker) firstErrors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errors...)
}

// connect dials every client, paced at st.ConnectRate, with at most 256
// handshakes in flight.
func (w *worker) connect(ctx context.Context, auth *session.Authenticator, st *workerStart) {
	n := len(st.Clients)
	if n == 0 {
		return
	}
	interval := time.Duration(float64(time.Second) / st.ConnectRate)
	jobs := make(chan int)
	var dialers sync.WaitGroup
	for range min(n, 256) {
		dialers.Go(func() {
			for i := range jobs {
				w.dial(ctx, auth, st, st.Clients[i])
			}
		})
	}
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
pace:
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break pace
			}
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break pace
		}
	}
	close(jobs)
	dialers.Wait()
	w.connectNS.Store(int64(time.Since(start)))
}

const handshakeTimeout = 10 * time.Second

func (w *worker) dial(ctx context.Context, auth *session.Authenticator, st *workerStart, c clientSpec) {
	err := func() error {
		var rooms []string
		if st.Room != "" {
			rooms = []string{st.Room}
		}
		tok, err := auth.MintRooms(c.User, c.Device, rooms, st.TokenTTL)
		if err != nil {
			return err
		}
		d := net.Dialer{Timeout: handshakeTimeout}
		if c.Source != "" {
			ip := net.ParseIP(c.Source)
			if ip == nil {
				return fmt.Errorf("bad source address %q", c.Source)
			}
			d.LocalAddr = &net.TCPAddr{IP: ip}
			d.Control = bindAddressNoPort
		}
		nc, err := d.DialContext(ctx, "tcp", c.Addr)
		if err != nil {
			return err
		}
		conn, _, err := gws.NewClientFromConn(w, &gws.ClientOption{
			Addr:             "ws://" + c.Addr + "/ws",
			RequestHeader:    http.Header{"Authorization": {"Bearer " + tok}},
			HandshakeTimeout: handshakeTimeout,
		}, nc)
		if err != nil {
			return err // NewClientFromConn closed nc
		}
		w.mu.Lock()
		if w.stopping.Load() {
			w.mu.Unlock()
			_ = nc.Close()
			return errors.New("stopped while connecting")
		}
		w.conns = append(w.conns, conn)
		w.loops.Go(conn.ReadLoop)
		w.mu.Unlock()
		w.opened.Add(1)
		return nil
	}()
	if err != nil {
		if ctx.Err() != nil {
			return // cancelled: not a failure of the node
		}
		w.failed.Add(1)
		w.mu.Lock()
		if len(w.errors) < 5 {
			w.errors = append(w.errors, fmt.Sprintf("%s as %s/%s: %v", c.Addr, c.User, c.Device, err))
		}
		w.mu.Unlock()
	}
}

// joinSentKey is where a client's session storage keeps the time (unix ns)
// its join frame was sent.
const joinSentKey = "join"

// joinAll sends every connected client's join frame, paced at rate per
// second; ctx ends it early.
func (w *worker) joinAll(ctx context.Context, rate float64) {
	w.mu.Lock()
	conns := slices.Clone(w.conns)
	w.mu.Unlock()
	frame := []byte(`{"type":"join","room":` + strconv.Quote(w.room) + `}`)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for i, c := range conns {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		c.Session().Store(joinSentKey, time.Now().UnixNano())
		if err := c.WriteMessage(gws.OpcodeText, frame); err != nil {
			w.joinErrors.Add(1)
			w.addError(fmt.Sprintf("join: %v", err))
		}
	}
}

func (w *worker) addError(msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errors) < 5 {
		w.errors = append(w.errors, msg)
	}
}

// bindAddressNoPort lets the kernel pick the source port at connect time,
// per destination, rather than at bind time, so one source address serves
// a full port range towards every node.
func bindAddressNoPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	return errors.Join(err, serr)
}

// stop closes every connection (close 1000) and waits for their read loops,
// cutting the sockets of any that have not ended within 10 s.
func (w *worker) stop() {
	w.mu.Lock()
	w.stopping.Store(true)
	conns := w.conns
	w.conns = nil
	w.mu.Unlock()
	for _, c := range conns {
		_ = c.NetConn().SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.WriteClose(1000, nil) // also closes the socket
	}
	done := make(chan struct{})
	go func() {
		w.loops.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		for _, c := range conns {
			_ = c.NetConn().Close()
		}
		<-done // a closed socket ends its read loop
	}
}

// gws.Event, shared by every client of the worker.

func (w *worker) OnOpen(*gws.Conn) {}

func (w *worker) OnClose(_ *gws.Conn, err error) {
	if w.stopping.Load() {
		return
	}
	w.dropped.Add(1)
	why := "network"
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		why = strconv.Itoa(int(ce.Code))
	}
	w.mu.Lock()
	w.closes[why]++
	w.mu.Unlock()
}

func (w *worker) OnPing(c *gws.Conn, payload []byte) { _ = c.WritePong(payload) }

func (w *worker) OnPong(*gws.Conn, []byte) {}

func (w *worker) OnMessage(c *gws.Conn, m *gws.Message) {
	now := time.Now().UnixNano()
	b := m.Bytes()
	if w.room != "" && !bytes.HasPrefix(b, msgPrefix) {
		w.onRoomFrame(c, b, now)
		m.Close()
		return
	}
	sent, seq, ok, isMsg := parseFrame(b)
	m.Close()
	switch {
	case !isMsg:
		w.other.Add(1)
		return
	case !ok || !w.seqs.add(seq, 1):
		w.bad.Add(1)
		return
	}
	lat := now - sent
	if lat < 0 {
		w.negative.Add(1)
		lat = 0
	}
	w.hist.Record(lat)
	w.window.Record(lat)
	if w.room != "" {
		w.last.raise(seq, max(lat, 1))
	}
	w.received.Add(1)
	w.firstRecv.CompareAndSwap(0, now)
	for {
		l := w.lastRecv.Load()
		if now <= l || w.lastRecv.CompareAndSwap(l, now) {
			break
		}
	}
}

// onRoomFrame counts a frame other than a message, with a room: a joined
// frame (its latency from the join frame's send), an error frame
// answering a join, or another (welcome, pong, ...).
func (w *worker) onRoomFrame(c *gws.Conn, b []byte, now int64) {
	switch {
	case bytes.HasPrefix(b, joinedPrefix):
		if v, ok := c.Session().Load(joinSentKey); ok {
			w.joinHist.Record(max(now-v.(int64), 0))
		}
		w.joined.Add(1)
	case bytes.HasPrefix(b, joinErrorPrefix):
		w.joinErrors.Add(1)
		w.addError("join refused: " + string(b[:min(len(b), 200)]))
	default:
		w.other.Add(1)
	}
}

var (
	joinedPrefix    = []byte(`{"type":"joined",`)
	joinErrorPrefix = []byte(`{"type":"error","op":"join"`)
	msgPrefix       = []byte(`{"type":"message",`)
	dataPrefix      = []byte(`"data":{"t":`)
	seqInfix        = []byte(`,"s":`)
)

// parseFrame reads a message frame's data as bench writes it,
// {"t":<unix ns>,"s":<seq>,"p":"..."}: the node compacts data but keeps the
// order of its keys. isMsg is false for frames other than messages.
func parseFrame(b []byte) (sentNS, seq int64, ok, isMsg bool) {
	if !bytes.HasPrefix(b, msgPrefix) {
		var f struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(b, &f) != nil || f.Type != "message" {
			return 0, 0, false, false
		}
		sentNS, seq, ok = parseData(f.Data)
		return sentNS, seq, ok, true
	}
	i := bytes.Index(b, dataPrefix)
	if i < 0 {
		return 0, 0, false, true
	}
	rest := b[i+len(dataPrefix):]
	sentNS, n := parseUint(rest)
	if n == 0 || !bytes.HasPrefix(rest[n:], seqInfix) {
		return 0, 0, false, true
	}
	rest = rest[n+len(seqInfix):]
	seq, n = parseUint(rest)
	if n == 0 {
		return 0, 0, false, true
	}
	return sentNS, seq, true, true
}

func parseData(d []byte) (sentNS, seq int64, ok bool) {
	var v struct {
		T *int64 `json:"t"`
		S *int64 `json:"s"`
	}
	if json.Unmarshal(d, &v) != nil || v.T == nil || v.S == nil {
		return 0, 0, false
	}
	return *v.T, *v.S, true
}

// parseUint parses leading decimal digits; n is how many were read (0 on
// none or overflow).
func parseUint(b []byte) (v int64, n int) {
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		if v > (1<<63-1-9)/10 {
			return 0, 0
		}
		v = v*10 + int64(b[n]-'0')
		n++
	}
	return v, n
}
