package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"wsmesh/config"
)

// Bounds of the phases between connecting and reporting.
const (
	registerLimit = 30 * time.Second // until every table lists every session
	drainLimit    = 30 * time.Second // after the last send, for the last messages
	drainStall    = 5 * time.Second  // ... or this long without a new one
	// drainQuiet: with calls answered "unreachable", messages may arrive
	// beyond those reported delivered (extra), so reaching the count
	// proves nothing: the drain also waits this long without a new one.
	drainQuiet = 500 * time.Millisecond
)

// Main runs `wsmesh bench args...` and returns the exit code: 0 the run
// completed, 1 it could not run or was interrupted, 2 usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "-worker" { // hidden: a client worker
		if len(args) > 1 {
			fmt.Fprintf(stderr, "wsmesh bench -worker: unexpected argument %q\n", args[1])
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return WorkerMain(ctx, os.Stdin, stdout)
	}
	o, err := ParseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, Usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsmesh bench: %v\n\n%s", err, Usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sum, err := Run(ctx, o, stderr)
	if sum != nil {
		if o.JSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(sum)
		} else {
			sum.writeText(stdout)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsmesh bench: %v\n", err)
		return 1
	}
	return 0
}

// runner is one run's state.
type runner struct {
	o       *Options
	log     io.Writer // stderr: phase lines, the progress line, warnings
	tty     bool
	exe     string
	secret  string
	apiKey  string
	api     *nodeAPI
	spawned *spawnedCluster
	fleet   fleet
	sender  *sender
	sum     *Summary

	workers   []*workerHandle // every worker started, for the summary
	sendStart time.Time

	progressMu sync.Mutex
	progress   string // the text of the progress line on screen
}

func (r *runner) logf(format string, args ...any) {
	r.progressMu.Lock()
	defer r.progressMu.Unlock()
	if r.progress != "" {
		fmt.Fprint(r.log, "\r\x1b[K")
	}
	fmt.Fprintf(r.log, "bench: "+format+"\n", args...)
	if r.progress != "" {
		fmt.Fprint(r.log, r.progress)
	}
}

func (r *runner) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.sum.Warnings = append(r.sum.Warnings, msg)
	r.logf("warning: %s", msg)
}

// Run performs a run as o says and returns its summary; the summary is
// returned, partial, along with an error when the run stopped early or ctx
// ended (Ctrl-C). Every node and worker it started has ended when it
// returns. With -spawn it sets o.Nodes to the spawned nodes' addresses.
// logw gets the phase lines, warnings and, on a terminal, the progress line.
func Run(ctx context.Context, o *Options, logw io.Writer) (*Summary, error) {
	r := &runner{o: o, log: logw, tty: isTTY(logw)}
	r.sum = &Summary{Mode: "send"}
	switch {
	case o.Idle:
		r.sum.Mode = "idle"
	case o.Room != "":
		r.sum.Mode = "room"
	}
	err := r.run(ctx)
	if cerr := r.cleanup(); cerr != nil {
		r.warn("%v", cerr)
	}
	r.sum.BenchCPUS = seconds(selfCPU())
	if ctx.Err() != nil {
		r.sum.Interrupted = true
		if err == nil || errors.Is(err, context.Canceled) {
			err = errors.New("interrupted")
		}
	}
	return r.sum, err
}

// cleanup ends whatever is still running: workers, then nodes.
func (r *runner) cleanup() error {
	r.fleet.kill()
	r.fleet.workers = nil
	if r.sender != nil {
		r.sender.close()
	}
	if r.api != nil {
		r.api.close()
	}
	if r.spawned != nil {
		err := r.spawned.stop()
		r.spawned = nil
		return err
	}
	return nil
}

func (r *runner) run(ctx context.Context) error {
	o := r.o
	r.exe = o.Exe
	if r.exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary to run nodes and workers: %w", err)
		}
		r.exe = exe
	}
	if err := r.setupNodes(ctx); err != nil {
		return err
	}
	c := &r.sum.Config
	*c = RunConfig{
		Spawned: o.Spawn > 0, Nodes: o.Nodes, Clients: o.Clients, Users: o.Users,
		DurationS: o.Duration.Seconds(), ConnectRate: o.ConnectRate, SourceIPs: len(o.SourceIPs),
	}
	if r.spawned != nil && o.Keep {
		c.Dir = r.spawned.dir
	}
	for _, i := range o.ClientsOn {
		c.ClientsOn = append(c.ClientsOn, r.sum.Nodes[i].Name)
	}
	if !o.Idle {
		c.Recipients, c.Rate, c.Senders, c.Messages, c.Payload = o.Recipients, o.Rate, o.Senders, o.Messages, o.Payload
		c.Room, c.Publishers, c.JoinProbes = o.Room, o.Publishers, o.JoinProbes
		for _, i := range o.SendTo {
			c.SendTo = append(c.SendTo, r.sum.Nodes[i].Name)
		}
	}
	r.readRSS(ctx, func(n *NodeSummary, v int64) { n.RSSBefore = v })
	for i := range r.sum.Nodes {
		if n := &r.sum.Nodes[i]; n.PID != 0 {
			n.cpu0, _ = procCPU(n.PID)
		}
	}

	if err := r.startWorkers(); err != nil {
		return err
	}
	c.Workers = len(r.fleet.workers)
	if !o.Idle {
		var targets []string
		for _, i := range o.SendTo {
			targets = append(targets, o.Nodes[i])
		}
		if o.Room != "" {
			r.sender = newPublisher(targets, r.apiKey, o.Room, o.Payload, o.Publishers)
		} else {
			r.sender = newSender(targets, r.apiKey, o.Users, o.Recipients, o.Payload, o.Senders)
		}
	}
	progressCtx, stopProgress := context.WithCancel(ctx)
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		r.showProgress(progressCtx)
	}()
	defer func() {
		stopProgress()
		<-progressDone
	}()

	if err := r.connect(ctx); err != nil {
		return err
	}
	r.readRSS(ctx, func(n *NodeSummary, v int64) { n.RSSConns = v })
	if o.Room != "" {
		if err := r.joinRoom(ctx); err != nil {
			return err
		}
		r.sum.Room.Probes = r.probeJoins(ctx)
		r.readFanout(ctx, func(n *NodeSummary, v float64) { n.fanout0 = v })
	}

	if o.Idle {
		r.logf("holding %d connections for %s", r.sum.Connections.Opened, o.Duration)
		t := time.NewTimer(o.Duration)
		held := time.Now()
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		r.sum.Idle = &IdleSummary{HeldS: time.Since(held).Seconds()}
	} else {
		r.send(ctx)
	}
	if o.Room != "" {
		r.readFanout(context.WithoutCancel(ctx), func(n *NodeSummary, v float64) {
			items := int64(v - n.fanout0)
			n.FanoutItems = &items
		})
		for i := range r.sum.Nodes {
			var elsewhere int64
			for j, via := range o.SendTo {
				if via != i {
					elsewhere += r.sender.okVia[j].Load()
				}
			}
			r.sum.Nodes[i].PublishesElsewhere = &elsewhere
		}
	}
	r.readRSS(context.WithoutCancel(ctx), func(n *NodeSummary, v int64) { n.RSSAfter = v })
	for i := range r.sum.Nodes {
		if n := &r.sum.Nodes[i]; n.PID != 0 {
			if c, err := procCPU(n.PID); err == nil {
				n.CPUS = seconds(c - n.cpu0)
			}
		}
	}

	stopProgress()
	<-progressDone
	return r.finish()
}

// setupNodes spawns the nodes or checks the given ones, and fills in the
// summary's node list.
func (r *runner) setupNodes(ctx context.Context) error {
	o := r.o
	if o.Spawn > 0 {
		t0 := time.Now()
		sc, err := spawnCluster(ctx, r.exe, o.Spawn, o.Keep, o.Recipients)
		r.spawned = sc
		if err != nil {
			return fmt.Errorf("spawn %d nodes: %w", o.Spawn, err)
		}
		r.secret, r.apiKey = sc.secret, sc.apiKey
		o.Nodes = nil
		for _, n := range sc.nodes {
			o.Nodes = append(o.Nodes, n.http)
			r.sum.Nodes = append(r.sum.Nodes, NodeSummary{Name: n.name, HTTP: n.http, PID: n.cmd.Process.Pid, RSSFrom: "/proc"})
		}
		where := "removed at the end"
		if o.Keep {
			where = "kept"
		}
		r.logf("%d node(s) up and in one cluster in %.1fs; configs and logs in %s (%s)", o.Spawn, time.Since(t0).Seconds(), sc.dir, where)
		r.api = newNodeAPI(r.apiKey)
		return nil
	}
	cfg, err := config.Load(o.ConfigPath, os.Environ())
	if err != nil {
		return err
	}
	if cfg.GeneratedSecret {
		return fmt.Errorf("no auth.jwt_secret configured (config: %s): client tokens would not verify; pass -config with the nodes' config, or use -spawn", cfg.Source)
	}
	r.secret = cfg.Auth.JWTSecret
	if len(cfg.Auth.APIKeys) > 0 {
		r.apiKey = cfg.Auth.APIKeys[0]
	}
	if len(o.Nodes) == 0 {
		host, port, err := net.SplitHostPort(cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http.listen %q: %v", cfg.HTTP.Listen, err)
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		o.Nodes = []string{net.JoinHostPort(host, port)}
	}
	r.api = newNodeAPI(r.apiKey)
	for _, addr := range o.Nodes {
		ci, err := r.api.cluster(ctx, addr)
		if err != nil {
			return fmt.Errorf("node %s: %w", addr, err)
		}
		r.sum.Nodes = append(r.sum.Nodes, NodeSummary{Name: ci.Node, HTTP: addr, RSSFrom: "/metrics"})
	}
	return nil
}

// readRSS reads every node's RSS into the summary through set.
func (r *runner) readRSS(ctx context.Context, set func(*NodeSummary, int64)) {
	for i := range r.sum.Nodes {
		n := &r.sum.Nodes[i]
		var v int64
		var err error
		if n.PID != 0 {
			var kib int64
			kib, err = vmRSSKiB(n.PID)
			v = kib << 10
		} else {
			v, err = r.api.metricsRSS(ctx, n.HTTP)
		}
		if err != nil {
			r.warn("node %s: RSS: %v", n.Name, err)
			continue
		}
		set(n, v)
	}
}

// startWorkers starts the client workers and gives each its clients:
// client i is user u(i mod users), device d(i div users), on node
// clients-on[i mod len], from source address i mod len, in worker i mod W.
func (r *runner) startWorkers() error {
	o := r.o
	nw := max(o.Workers, 1)
	starts := make([]workerStart, nw)
	for w := range starts {
		starts[w] = workerStart{
			Secret:      r.secret,
			TokenTTL:    o.Duration + time.Hour,
			ConnectRate: o.ConnectRate / float64(nw),
			Room:        o.Room,
			Clients:     make([]clientSpec, 0, o.Clients/nw+1),
		}
	}
	for i := range o.Clients {
		c := clientSpec{
			User:   userID(i % o.Users),
			Device: "d" + strconv.Itoa(i/o.Users),
			Addr:   o.Nodes[o.ClientsOn[i%len(o.ClientsOn)]],
		}
		if len(o.SourceIPs) > 0 {
			c.Source = o.SourceIPs[i%len(o.SourceIPs)].String()
		}
		starts[i%nw].Clients = append(starts[i%nw].Clients, c)
	}
	exe := r.exe
	if o.Workers == 0 {
		exe = "" // in this process
	}
	for w := range starts {
		h, err := startWorker(w, exe, r.log)
		if err != nil {
			return err
		}
		h.clients = len(starts[w].Clients)
		r.fleet.workers = append(r.fleet.workers, h)
		r.workers = append(r.workers, h)
		if err := h.sendOp(toWorker{Op: "start", Start: &starts[w]}); err != nil {
			return fmt.Errorf("%s: %w", h.name(), err)
		}
	}
	return nil
}

// connect waits for every worker to have dialled its clients, then for
// every node's table to list them all.
func (r *runner) connect(ctx context.Context) error {
	o := r.o
	cs := &r.sum.Connections
	cs.Attempted = o.Clients
	limit := time.Duration(float64(o.Clients)/o.ConnectRate*float64(time.Second)) + 60*time.Second
	t0 := time.Now()
	var slowest int64
	for _, w := range r.fleet.workers {
		m, err := w.await(ctx, w.connected, limit, "connected report")
		if err != nil {
			return err
		}
		cs.Opened += m.Opened
		cs.Failed += m.Failed
		slowest = max(slowest, m.ConnectNS)
		for _, e := range m.Errors {
			if len(cs.Errors) < 5 {
				cs.Errors = append(cs.Errors, e)
			}
		}
	}
	cs.ConnectS = time.Duration(slowest).Seconds()
	if cs.ConnectS > 0 {
		cs.ConnectRate = math.Round(float64(cs.Opened) / cs.ConnectS)
	}
	r.logf("%d of %d clients connected in %.2fs (%.0f/s), %d failed", cs.Opened, o.Clients, cs.ConnectS, cs.ConnectRate, cs.Failed)
	if cs.Failed > 0 {
		r.warn("%d connections failed; first: %v", cs.Failed, cs.Errors)
	}

	// Every node learns of every session through the cluster's table; a
	// /send before that finds a user offline.
	deadline := time.NewTimer(registerLimit)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		agg, err := r.fleet.report(ctx, false)
		if err != nil {
			return err
		}
		want := int(agg.Opened - agg.Dropped)
		all := true
		for i, n := range r.sum.Nodes {
			ci, err := r.api.cluster(ctx, n.HTTP)
			if err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			r.sum.Nodes[i].Sessions = ci.ownSessions()
			if ci.TableSize < want {
				all = false
			}
		}
		if all {
			cs.RegisteredS = time.Since(t0).Seconds()
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			r.warn("after %s, not every node's table lists all %d sessions: sends may find users offline", registerLimit, want)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// joinRoom has every client join the room (the workers send the join
// frames, paced at -connect-rate), then waits until each node's GET
// /rooms/{room} counts them all.
func (r *runner) joinRoom(ctx context.Context) error {
	o := r.o
	rs := &RoomSummary{Room: o.Room}
	r.sum.Room = rs
	r.logf("joining %q", o.Room)
	t0 := time.Now()
	for _, w := range r.fleet.workers {
		if err := w.sendOp(toWorker{Op: "join"}); err != nil {
			return fmt.Errorf("%s: %w", w.name(), err)
		}
	}
	limit := time.Duration(float64(o.Clients)/o.ConnectRate*float64(time.Second)) + registerLimit
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		agg, err := r.fleet.report(ctx, false)
		if err != nil {
			return err
		}
		want := int(agg.Opened - agg.Dropped)
		rs.Joined, rs.JoinErrors = agg.Joined, agg.JoinErrors
		done := agg.Joined+agg.JoinErrors >= int64(want)
		rs.Members = -1
		for i, n := range r.sum.Nodes {
			ri, err := r.api.room(ctx, n.HTTP, o.Room)
			if err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			r.sum.Nodes[i].RoomMembers = ri.membersOn(n.Name)
			if rs.Members < 0 || ri.Members < rs.Members {
				rs.Members = ri.Members
			}
			if ri.Members < want {
				done = false
			}
		}
		if done {
			rs.JoinedS = time.Since(t0).Seconds()
			r.logf("%d members of %q counted by every node after %.2fs (%d joined, %d join errors)", rs.Members, o.Room, rs.JoinedS, rs.Joined, rs.JoinErrors)
			if rs.JoinErrors > 0 {
				r.warn("%d joins failed or were refused", rs.JoinErrors)
			}
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			r.warn("after %s, %d of %d clients joined (%d errors) and the nodes count at least %d members of %q: publishes may miss some",
				limit, rs.Joined, want, rs.JoinErrors, rs.Members, o.Room)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readFanout reads every node's wsmesh_fanout_items_received_total.
func (r *runner) readFanout(ctx context.Context, set func(*NodeSummary, float64)) {
	for i := range r.sum.Nodes {
		n := &r.sum.Nodes[i]
		v, err := r.api.metric(ctx, n.HTTP, "wsmesh_fanout_items_received_total")
		if err != nil {
			r.warn("node %s: %v", n.Name, err)
			continue
		}
		set(n, v)
	}
}

// send runs the /send load, then waits for the clients to receive what
// was reported delivered.
func (r *runner) send(ctx context.Context) {
	o := r.o
	limit := o.Messages
	if limit == 0 {
		limit = maxMessages
	}
	what := fmt.Sprintf("for %s", o.Duration)
	if o.Messages > 0 {
		what = fmt.Sprintf("%d messages (at most %s)", o.Messages, o.Duration)
	}
	if o.Room != "" {
		r.logf("publishing into %q %s", o.Room, what)
	} else {
		r.logf("sending %s", what)
	}
	start := time.Now()
	r.sendStart = start
	r.sender.run(ctx, start.Add(o.Duration), o.Rate, o.Senders, limit)
	sendEnd := time.Now()
	if o.Messages > 0 && r.sender.started.Load() < o.Messages && ctx.Err() == nil {
		r.warn("-duration %s ended the run after %d of %d sends (raise -duration)", o.Duration, r.sender.started.Load(), o.Messages)
	}

	// Drain: until every message reported delivered is received, bounded;
	// if some answers said unreachable, until no more arrive.
	expected := r.sender.resDelivered.Load()
	unsure := r.sender.resUnreachable.Load() > 0
	dl := time.Now().Add(drainLimit)
	last, lastAt := int64(-1), time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		agg, err := r.fleet.report(ctx, false)
		if err != nil {
			r.warn("waiting for the last messages: %v", err)
			break
		}
		if agg.Received > last {
			last, lastAt = agg.Received, time.Now()
		}
		if agg.Received >= expected && (!unsure || time.Since(lastAt) > drainQuiet) {
			break
		}
		if time.Since(lastAt) > drainStall || time.Now().After(dl) {
			r.warn("gave up waiting for %d of %d messages reported delivered", expected-agg.Received, expected)
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}

	s := r.sender
	end := time.Unix(0, s.lastDone.Load())
	if s.lastDone.Load() == 0 {
		end = sendEnd
	}
	sd := &SendSummary{
		Started: s.started.Load(), OK: s.ok.Load(), HTTPErrors: s.httpErrs.Load(), TransportErrors: s.transportErr.Load(), Cancelled: s.cancelled.Load(),
		DurationS: end.Sub(start).Seconds(), Latency: s.reqHist.Latency(),
	}
	if sd.DurationS > 0 {
		sd.Rate = math.Round(float64(sd.OK) / sd.DurationS)
	}
	s.mu.Lock()
	for code, n := range s.statuses {
		if sd.ByStatus == nil {
			sd.ByStatus = map[string]int64{}
		}
		sd.ByStatus[strconv.Itoa(code)] = n
	}
	sd.Errors = append(sd.Errors, s.errs...)
	s.mu.Unlock()
	r.sum.Results = &ResultsSummary{Delivered: s.resDelivered.Load(), Offline: s.resOffline.Load(), Error: s.resFailed.Load(), Unreachable: s.resUnreachable.Load()}
	path := "/send"
	if o.Room != "" {
		r.sum.Publishes, path = sd, "/publish"
	} else {
		r.sum.Sends = sd
	}
	if sd.HTTPErrors+sd.TransportErrors > 0 {
		r.warn("%d %s calls failed; first: %v", sd.HTTPErrors+sd.TransportErrors, path, sd.Errors)
	}
	if n := r.sum.Results.Unreachable; n > 0 && o.Room != "" {
		r.warn("/publish answers named a node unreachable %d times (its members may have had the message: see extra)", n)
	} else if n > 0 {
		r.warn("/send answered %d sessions unreachable (their node did not answer in time; the message may have reached them: see extra)", n)
	}
}

// finish stops the workers, merges their final reports into the summary
// and computes what was missing.
func (r *runner) finish() error {
	ws := r.fleet.workers
	finals, err := r.fleet.stop()
	r.fleet.workers = nil
	cs := &r.sum.Connections
	hist, joinHist := NewHistogram(), NewHistogram()
	var recv seqCounts
	var last seqMax
	m := &MessagesSummary{}
	var firstErr error
	for i, f := range finals {
		if f.Type != "final" {
			continue
		}
		wsum := WorkerSummary{PID: ws[i].pid, Clients: ws[i].clients, RSSBytes: f.RSSKiB << 10, CPUS: seconds(time.Duration(f.CPUNS))}
		if wsum.PID == 0 { // in-process: its CPU is bench's
			wsum.CPUS = 0
		}
		r.sum.Workers = append(r.sum.Workers, wsum)
		cs.Dropped += f.Dropped
		for k, v := range f.Closes {
			if cs.DropReasons == nil {
				cs.DropReasons = map[string]int64{}
			}
			cs.DropReasons[k] += v
		}
		m.Received += f.Received
		m.Unparsed += f.Bad
		m.Other += f.Other
		m.Negative += f.Negative
		if f.Hist != nil {
			if err := hist.MergeSnapshot(*f.Hist); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if err := recv.addEncoded(f.Seqs); err != nil && firstErr == nil {
			firstErr = err
		}
		if f.JoinHist != nil {
			if err := joinHist.MergeSnapshot(*f.JoinHist); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if err := last.raiseEncoded(f.Last); err != nil && firstErr == nil {
			firstErr = err
		}
		if f.LastRecv > 0 {
			m.DurationS = max(m.DurationS, time.Unix(0, f.LastRecv).Sub(r.sendStart).Seconds())
		}
	}
	if cs.Dropped > 0 {
		r.warn("%d connections were closed by the nodes or the network during the run: %s", cs.Dropped, fmtCounts(cs.DropReasons))
	}
	if err == nil {
		err = firstErr
	}
	if err != nil {
		return err
	}
	if r.sum.Idle != nil {
		var grew, sessions int64
		for i := range r.sum.Nodes {
			n := &r.sum.Nodes[i]
			if n.Sessions > 0 && n.RSSAfter > 0 && n.RSSBefore > 0 {
				n.RSSPerConn = math.Round(float64(n.RSSAfter-n.RSSBefore) / float64(n.Sessions))
				grew += n.RSSAfter - n.RSSBefore
				sessions += int64(n.Sessions)
			}
		}
		if sessions > 0 {
			r.sum.Idle.RSSPerConn = math.Round(float64(grew) / float64(sessions))
		}
		return nil
	}
	if r.sender == nil {
		return nil
	}
	s := r.sender
	m.Expected = s.resDelivered.Load()
	top := max(s.issued.Load(), recv.top.Load())
	for seq := range top {
		exp, got := int64(s.delivered.get(seq)), int64(recv.get(seq))
		switch {
		case got < exp:
			m.Missing += exp - got
			if len(m.MissingSeqs) < 10 {
				m.MissingSeqs = append(m.MissingSeqs, seq)
			}
		case got > exp:
			m.Extra += got - exp
		}
	}
	if m.DurationS > 0 {
		m.Rate = math.Round(float64(m.Received) / m.DurationS)
	}
	r.sum.Messages = m
	lat := hist.Latency()
	r.sum.Latency = &lat
	if rs := r.sum.Room; rs != nil {
		rs.JoinLatency = joinHist.Latency()
		lastHist := NewHistogram()
		for seq := range top {
			exp := int64(s.delivered.get(seq))
			switch {
			case exp == 0:
			case int64(recv.get(seq)) < exp:
				rs.LastMemberIncomplete++
			default:
				lastHist.Record(last.get(seq))
			}
		}
		rs.LastMember = lastHist.Latency()
	}
	if m.Missing > 0 {
		r.warn("%d messages reported delivered were not received (first sequence numbers: %v)", m.Missing, m.MissingSeqs)
	}
	return nil
}

// isTTY reports whether w is a terminal.
func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
