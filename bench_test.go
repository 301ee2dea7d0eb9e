package main

// Benchmarks of a whole node. All traffic stays on 127.0.0.1. Run them with
//
//	go test -run '^$' -bench Send1000 -benchtime=200x .
//	go test -run '^$' -bench IdleRSS -benchtime=1x .
//
// BenchmarkIdleRSS does its work once per sub-benchmark whatever b.N is.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"wsmesh/internal/counter"
	"wsmesh/internal/testsupport"
	"wsmesh/internal/testsupport/nodetest"
	"wsmesh/session"
)

// benchDeadline bounds every wait of a benchmark for deliveries or sessions.
const benchDeadline = 60 * time.Second

// benchClient is the gws.Event of lightweight benchmark clients, shared by
// all of them: it answers pings, counts messages (if msgs is set) and
// counts closes. It buffers nothing.
type benchClient struct {
	msgs   *counter.Counter
	closed atomic.Int64
}

func (*benchClient) OnOpen(*gws.Conn)             {}
func (h *benchClient) OnClose(*gws.Conn, error)   { h.closed.Add(1) }
func (*benchClient) OnPing(c *gws.Conn, _ []byte) { _ = c.WritePong(nil) }
func (*benchClient) OnPong(*gws.Conn, []byte)     {}
func (h *benchClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	m.Close()
	if h.msgs != nil {
		h.msgs.Add()
	}
}

// benchConns holds benchmark client connections and their read loops.
type benchConns struct {
	mu    sync.Mutex
	conns []*gws.Conn
	loops sync.WaitGroup
}

// dial opens a WebSocket to addr's /ws with token and starts its read loop.
func (p *benchConns) dial(d *net.Dialer, addr, token string, h gws.Event) error {
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	c, _, err := gws.NewClientFromConn(h, &gws.ClientOption{Addr: "ws://" + addr + "/ws?token=" + token}, nc)
	if err != nil {
		return err // NewClientFromConn closed nc
	}
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
	p.loops.Go(c.ReadLoop)
	return nil
}

// closeAll closes every connection and waits for the read loops to end.
func (p *benchConns) closeAll(tb testing.TB) {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.NetConn().Close()
	}
	done := make(chan struct{})
	go func() {
		p.loops.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(benchDeadline):
		tb.Errorf("%d client read loops did not end within %s of closing", len(conns), benchDeadline)
	}
}

// quietTB keeps a node started with nodetest.Start from logging every session
// and send through testing's log: benchmark output is always printed, and
// the timed loop would pay for it. Warnings and errors still get through.
type quietTB struct{ testing.TB }

func (q quietTB) Logf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if strings.Contains(s, "level=WARN") || strings.Contains(s, "level=ERROR") {
		q.TB.Logf("%s", s)
	}
}

// BenchmarkSend1000Users runs a node in this process with 1000 connected
// clients (users u0..u999) and times POST /send to 1 user and to all 1000:
// each op is one request, and the clock stops only once every client has
// received its frames. msgs/s counts frames delivered to clients. Clients,
// HTTP client and node share this process, so allocs/op counts all three.
// Sends are sequential on one keep-alive connection; if clients fall more
// than half a send queue behind, the loop waits for them rather than have
// the node close them as slow consumers.
func BenchmarkSend1000Users(b *testing.B) {
	const users = 1000
	cfg := nodetest.Config(b)
	cfg.Session.SendQueue = 4096
	cfg.HTTP.MaxUsersPerSend = users
	cfg.Cluster.Bind = "127.0.0.1:0" // gossip on a free port, not the default 7946
	tn := nodetest.Start(quietTB{b}, cfg)

	msgs := counter.New()
	handler := &benchClient{msgs: msgs}
	var clients benchConns
	b.Cleanup(func() { clients.closeAll(b) })
	d := &net.Dialer{Timeout: 5 * time.Second}
	for i := range users {
		if err := clients.dial(d, tn.Addr(), tn.Token(b, "u"+strconv.Itoa(i), ""), handler); err != nil {
			b.Fatalf("dial client %d: %v", i, err)
		}
	}
	testsupport.WaitFor(b, "1000 sessions", func() bool { return tn.Hub().Len() == users })

	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: benchDeadline}
	b.Cleanup(tr.CloseIdleConnections)
	url := "http://" + tn.Addr() + "/send"
	var answer bytes.Buffer
	post := func(body []byte) error {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+testsupport.APIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		answer.Reset()
		_, err = answer.ReadFrom(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			return err
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("status %d: %.300s", resp.StatusCode, answer.Bytes())
		case !bytes.Contains(answer.Bytes(), []byte(`"offline":0,"failed":0,`)):
			return fmt.Errorf("not delivered to every user: %.300s", answer.Bytes())
		}
		return nil
	}
	sendBody := func(n int) []byte {
		var bb bytes.Buffer
		bb.WriteString(`{"users":[`)
		for i := range n {
			if i > 0 {
				bb.WriteByte(',')
			}
			fmt.Fprintf(&bb, `"u%d"`, i)
		}
		bb.WriteString(`],"data":{"kind":"bench","text":"hello from wsmesh","n":12345,"tags":["a","b","c"]}}`)
		return bb.Bytes()
	}

	// One checked send before timing anything.
	var out struct{ Delivered, Offline, Failed int }
	if err := post(sendBody(users)); err != nil {
		b.Fatalf("first send: %v", err)
	}
	if err := json.Unmarshal(answer.Bytes(), &out); err != nil || out.Delivered != users || out.Offline+out.Failed != 0 {
		b.Fatalf("first send: %+v, %v", out, err)
	}
	if !msgs.WaitFor(users, benchDeadline) {
		b.Fatalf("first send: %d of %d frames received", msgs.Load(), users)
	}

	window := int64(cfg.Session.SendQueue / 2)
	run := func(n int) func(*testing.B) {
		body := sendBody(n)
		return func(b *testing.B) {
			b.ReportAllocs()
			base := msgs.Load()
			perSend := int64(n)
			b.ResetTimer()
			start := time.Now()
			for i := range int64(b.N) {
				if i >= window && !msgs.WaitFor(base+(i-window+1)*perSend, benchDeadline) {
					b.Fatalf("clients stalled: %d frames received, %d sends made", msgs.Load()-base, i)
				}
				if err := post(body); err != nil {
					b.Fatalf("send %d: %v", i, err)
				}
			}
			want := base + int64(b.N)*perSend
			if !msgs.WaitFor(want, benchDeadline) {
				b.Fatalf("after %d sends, clients received %d of %d frames within %s",
					b.N, msgs.Load()-base, want-base, benchDeadline)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(int64(b.N)*perSend)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sends/s")
		}
	}
	b.Run("users=1", run(1))
	b.Run("users="+strconv.Itoa(users), run(users))
	if c := handler.closed.Load(); c != 0 {
		b.Errorf("%d clients were closed during the benchmark", c)
	}
}

// BenchmarkIdleRSS runs the built wsmesh binary as its own process and
// measures its resident memory (VmRSS) idle, then holding N idle WebSocket
// sessions, and the rate at which they connect. It does the work once per
// sub-benchmark whatever b.N is: run it with -benchtime=1x. Metrics:
// idle-RSS-KiB, conns-RSS-KiB, KiB/conn (their difference over N) and
// conns/s (N over the time from the first dial until GET /cluster reports N
// sessions); ns/op is that same connect time. B/op and allocs/op, if
// shown, are this process's: the clients, not the node.
func BenchmarkIdleRSS(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "wsmesh") // removed when the benchmark ends
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	for _, n := range []int{1000, 10000} {
		b.Run("conns="+strconv.Itoa(n), func(b *testing.B) { benchIdleRSS(b, bin, n) })
	}
}

func benchIdleRSS(b *testing.B, bin string, n int) {
	b.StopTimer()
	cfgPath := filepath.Join(b.TempDir(), "wsmesh.toml")
	cfgText := `
[node]
name = "rss"
shutdown_timeout = "10s"
[http]
listen = "127.0.0.1:0"
[cluster]
bind = "127.0.0.1:0"
[auth]
jwt_secret = "` + testsupport.Secret + `"
api_keys = ["` + testsupport.APIKey + `"]
[log]
level = "info"
format = "json"
`
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		b.Fatal(err)
	}
	node := startBenchProcess(b, bin, cfgPath)

	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	b.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	sessions := func() int {
		req, err := http.NewRequest(http.MethodGet, "http://"+node.addr+"/cluster", nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testsupport.APIKey)
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatalf("GET /cluster: %v", err)
		}
		defer resp.Body.Close()
		var out struct {
			Members []struct {
				Name     string `json:"name"`
				Sessions int    `json:"sessions"`
			} `json:"members"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || len(out.Members) == 0 {
			b.Fatalf("GET /cluster: status %d, %+v, %v", resp.StatusCode, out, err)
		}
		return out.Members[0].Sessions
	}
	if s := sessions(); s != 0 {
		b.Fatalf("fresh node reports %d sessions", s)
	}
	idle := procStatus(b, node.cmd.Process.Pid)

	auth, err := session.NewAuthenticator([]byte(testsupport.Secret))
	if err != nil {
		b.Fatal(err)
	}
	tokens := make([]string, n)
	for i := range tokens {
		if tokens[i], err = auth.Mint("c"+strconv.Itoa(i), "", time.Hour); err != nil {
			b.Fatal(err)
		}
	}

	handler := &benchClient{}
	var clients benchConns
	b.Cleanup(func() { clients.closeAll(b) }) // runs before the node's cleanup
	const workers = 16
	var (
		next    atomic.Int64
		failed  atomic.Bool
		errOnce sync.Once
		dialErr error
		wg      sync.WaitGroup
	)
	d := &net.Dialer{Timeout: 5 * time.Second}
	b.ResetTimer()
	b.StartTimer()
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := clients.dial(d, node.addr, tokens[i], handler); err != nil {
					errOnce.Do(func() { dialErr = fmt.Errorf("client %d: %w", i, err) })
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if dialErr != nil {
		b.Fatalf("dial: %v", dialErr)
	}
	dialed := time.Since(start)
	deadline := time.Now().Add(benchDeadline)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for got := sessions(); got != n; got = sessions() {
		if c := handler.closed.Load(); c > 0 {
			b.Fatalf("%d clients closed by the node while connecting (%d sessions)", c, got)
		}
		if time.Now().After(deadline) {
			b.Fatalf("node reports %d of %d sessions after %s", got, n, benchDeadline)
		}
		<-tick.C
	}
	elapsed := time.Since(start)
	b.StopTimer()
	held := procStatus(b, node.cmd.Process.Pid)

	b.ReportMetric(float64(idle["VmRSS"]), "idle-RSS-KiB")
	b.ReportMetric(float64(held["VmRSS"]), "conns-RSS-KiB")
	b.ReportMetric(float64(held["VmRSS"]-idle["VmRSS"])/float64(n), "KiB/conn")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "conns/s")
	b.ReportMetric(float64(elapsed.Nanoseconds()), "ns/op") // the work was done once, whatever b.N
	b.Logf("node pid %d, %d conns: dialed in %s, all registered in %s", node.cmd.Process.Pid, n,
		dialed.Round(time.Millisecond), elapsed.Round(time.Millisecond))
	for _, k := range []string{"VmRSS", "RssAnon", "RssFile", "VmHWM", "VmData", "Threads"} {
		b.Logf("  %-8s idle %8d  with conns %8d", k, idle[k], held[k])
	}
}

// benchProcess is a wsmesh node running as its own process.
type benchProcess struct {
	cmd  *exec.Cmd
	addr string // its HTTP listener

	done    chan struct{} // closed once the process exited and stderr is drained
	exitErr error

	mu     sync.Mutex
	alerts []string // the first WARN and ERROR log lines, and lines that are not JSON
}

// startBenchProcess runs bin serve -config cfgPath, waits for its "node
// serving" log line and, when the benchmark ends, stops it with SIGTERM and
// waits for it to exit (killing it if it does not within benchDeadline).
func startBenchProcess(tb testing.TB, bin, cfgPath string) *benchProcess {
	tb.Helper()
	p := &benchProcess{cmd: exec.Command(bin, "serve", "-config", cfgPath), done: make(chan struct{})}
	p.cmd.Env = os.Environ()
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	serving := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if bytes.HasPrefix(line, []byte(`{`)) && bytes.Contains(line, []byte(`"level":"INFO"`)) &&
				!bytes.Contains(line, []byte(`"msg":"node serving"`)) {
				continue // the bulk: a line per session opened and closed
			}
			var m struct{ Level, Msg, HTTP string }
			if json.Unmarshal(line, &m) != nil {
				p.alert(string(line))
				continue
			}
			switch {
			case m.Msg == "node serving":
				select {
				case serving <- m.HTTP:
				default:
				}
			case m.Level == "WARN" || m.Level == "ERROR":
				p.alert(string(line))
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.exitErr = p.cmd.Wait()
	}()
	tb.Cleanup(func() {
		defer p.logAlerts(tb)
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			select {
			case <-p.done: // exited already
			default:
				tb.Errorf("SIGTERM: %v", err)
			}
		}
		select {
		case <-p.done:
			if p.exitErr != nil {
				tb.Errorf("node process after SIGTERM: %v", p.exitErr)
			}
		case <-time.After(benchDeadline):
			tb.Errorf("node process did not exit within %s of SIGTERM: killed", benchDeadline)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case p.addr = <-serving:
	case <-p.done:
		tb.Fatalf("node process exited before serving: %v", p.exitErr)
	case <-time.After(testsupport.WaitLimit):
		tb.Fatalf("node process did not log that it serves within %s", testsupport.WaitLimit)
	}
	return p
}

func (p *benchProcess) alert(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.alerts) < 20 {
		p.alerts = append(p.alerts, line)
	}
}

func (p *benchProcess) logAlerts(tb testing.TB) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.alerts {
		tb.Logf("node: %s", l)
	}
}

// procStatus reads /proc/pid/status: sizes in KiB, counts as they are.
func procStatus(tb testing.TB, pid int) map[string]int64 {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatalf("read process status: %v", err)
	}
	out := map[string]int64{}
	for line := range strings.Lines(string(raw)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 || (len(f) == 2 && f[1] != "kB") || len(f) > 2 {
			continue
		}
		if x, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			out[k] = x
		}
	}
	if out["VmRSS"] == 0 {
		tb.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	return out
}
