//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"wsmesh/internal/testsupport"

	"golang.org/x/sys/unix"
)

// TestMultiHostNamespaces runs three nodes as processes, each in its own
// network namespace with its own address, as on three hosts:
//
//	root namespace (this test):  bridge wsmb<sfx>  10.231.X.254/24
//	  ├─ veth wsmh1<sfx> ── wsmn1<sfx> in netns wsmesh-<sfx>-n1: 10.231.X.1  node n1
//	  ├─ veth wsmh2<sfx> ── wsmn2<sfx> in netns wsmesh-<sfx>-n2: 10.231.X.2  node n2 (seed n1)
//	  └─ veth wsmh3<sfx> ── wsmn3<sfx> in netns wsmesh-<sfx>-n3: 10.231.X.3  node n3 (seed n1)
//
// Each node binds gossip on 0.0.0.0:7946, advertises <its address>:7946, is
// encrypted with a cluster key and serves HTTP on <its address>:8080 with a
// random jwt_secret and API key. The bridge is layer 2 (no IP forwarding,
// no NAT); the test reaches the nodes through the bridge's own address.
//
// Before the nodes start, a probe checks TCP and UDP between every pair of
// namespaces and TCP from this process to each, and fails with what the
// host's firewall looks like if something is filtered. Everything the test
// creates it removes in a cleanup, and the cleanup checks that nothing
// named with the run's suffix is left.
func TestMultiHostNamespaces(t *testing.T) {
	ipPath := testsupport.RequireTool(t, "ip", "iproute2")
	if euid := os.Geteuid(); euid != 0 {
		t.Skipf("not root (euid %d): this test creates network namespaces, a bridge and veth pairs with `ip netns add` / `ip link add`, which needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)", euid)
	}
	dir := t.TempDir()
	l := newNetnsLab(t, ipPath)
	t.Cleanup(l.cleanup) // registered before anything is created
	setupStart := time.Now()
	l.setup()
	setupTook := time.Since(setupStart)
	t.Logf("created netns %s, bridge %s (%s.254/24), veths %s in %s",
		strings.Join(l.nss, ", "), l.bridge, l.subnet, strings.Join(l.hostVeths, ", "), setupTook.Round(time.Millisecond))

	probeStart := time.Now()
	l.probePaths()
	probeTook := time.Since(probeStart)
	t.Logf("network probe (TCP+UDP between all namespaces, TCP from the root namespace) passed in %s", probeTook.Round(time.Millisecond))
	bin := buildBinary(t) // after the set-up, so a machine that forbids it skips at once

	// The nodes' secrets: random for this run, strong enough for a
	// non-loopback listener.
	clusterKey := base64.StdEncoding.EncodeToString(netnsRandom(t, 32))
	jwtSecret := base64.RawURLEncoding.EncodeToString(netnsRandom(t, 32))
	apiKey := "netns-" + hex.EncodeToString(netnsRandom(t, 16))
	nodes := make([]*netnsNode, len(l.nss))
	for i, ns := range l.nss {
		ipAddr := l.nodeIP(i)
		n := &netnsNode{
			name:    fmt.Sprintf("n%d", i+1),
			ns:      ns,
			http:    net.JoinHostPort(ipAddr, "8080"),
			gossip:  net.JoinHostPort(ipAddr, "7946"),
			cfgPath: filepath.Join(dir, fmt.Sprintf("n%d.toml", i+1)),
			logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)),
			apiKey:  apiKey,
		}
		seeds := ""
		if i > 0 {
			seeds = fmt.Sprintf("seeds = [%q]\n", nodes[0].gossip)
		}
		cfg := fmt.Sprintf(`[node]
name = %q
shutdown_timeout = "5s"
[http]
listen = %q
[cluster]
bind = "0.0.0.0:7946"
advertise = %q
%ssecret_keys = [%q]
[auth]
jwt_secret = %q
api_keys = [%q]
[log]
format = "json"
level = "info"
`, n.name, n.http, n.gossip, seeds, clusterKey, jwtSecret, apiKey)
		if err := os.WriteFile(n.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		n.api = testsupport.NewClient(n.http, jwtSecret, apiKey)
		nodes[i] = n
	}
	t.Cleanup(func() { // runs before l.cleanup: the logs are still there
		if t.Failed() {
			for _, n := range nodes {
				t.Log(n.logTail(40))
			}
		}
	})

	startAt := time.Now()
	for _, n := range nodes {
		l.start(n, bin)
	}
	startTook := time.Since(startAt)
	t.Logf("3 nodes serving in %s (each runs as `ip netns exec <ns> wsmesh serve`, ip execs in place)", startTook.Round(time.Millisecond))

	advertised := map[string]string{}
	for _, n := range nodes {
		advertised[n.name] = n.gossip
	}
	convergeAt := time.Now()
	for _, n := range nodes {
		l.poll(n.name+" to list n1, n2, n3 alive", 3*testsupport.WaitLimit, func() (bool, string) {
			cl, err := n.cluster()
			if err != nil {
				return false, err.Error()
			}
			if cl.Node != n.name || len(cl.Members) != len(nodes) {
				return false, fmt.Sprintf("%+v", cl)
			}
			for _, m := range cl.Members {
				if _, ok := advertised[m.Name]; !ok || m.State != "alive" {
					return false, fmt.Sprintf("%+v", cl)
				}
			}
			return true, ""
		})
	}
	convergeTook := time.Since(convergeAt)
	t.Logf("all 3 nodes list 3 alive members %s after the last node served", convergeTook.Round(time.Millisecond))
	for _, n := range nodes {
		cl, err := n.cluster()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range cl.Members {
			host, _, _ := net.SplitHostPort(m.Addr)
			if ip := net.ParseIP(host); ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
				t.Errorf("%s's /cluster: %s has addr %q: not its namespace address", n.name, m.Name, m.Addr)
			}
			if m.Addr != advertised[m.Name] {
				t.Errorf("%s's /cluster: %s has addr %q, want its advertised %q", n.name, m.Name, m.Addr, advertised[m.Name])
			}
		}
		t.Logf("%s's /cluster: %+v", n.name, cl.Members)
	}

	// A client on n3 (through the bridge to 10.231.X.3:8080) gets a message
	// sent on n1: n1 relays it to n3 over the encrypted gossip link.
	n1, n3 := nodes[0], nodes[2]
	user := "u-" + l.suffix
	deliverAt := time.Now()
	c := n3.api.Dial(t, n3.api.Token(t, user, "web"), testsupport.DialOpts{})
	l.poll("n1 to know n3's session", testsupport.WaitLimit, func() (bool, string) {
		cl, err := n1.cluster()
		if err != nil {
			return false, err.Error()
		}
		for _, m := range cl.Members {
			if m.Name == "n3" {
				return m.Sessions == 1, fmt.Sprintf("%+v", cl.Members)
			}
		}
		return false, fmt.Sprintf("%+v", cl.Members)
	})
	body := fmt.Sprintf(`{"users":[%q],"data":{"via":"n1","run":%q}}`, user, l.suffix)
	code, out, err := n1.post("/send", body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST /send on n1: %d %v %v", code, out, err)
	}
	results, _ := out["results"].([]any)
	if out["delivered"] != 1.0 || out["offline"] != 0.0 || out["failed"] != 0.0 || len(results) != 1 {
		t.Fatalf("POST /send on n1 to %s on n3: %v, want one delivered", user, out)
	}
	r, _ := results[0].(map[string]any)
	if r["node"] != "n3" || r["user"] != user || r["device"] != "web" || r["status"] != "delivered" {
		t.Fatalf("POST /send on n1: result %v, want %s/web delivered by node n3", r, user)
	}
	f := c.Next(t)
	data, _ := f["data"].(map[string]any)
	if f["type"] != "message" || f["id"] != out["id"] || data["via"] != "n1" || data["run"] != l.suffix {
		t.Fatalf("client on n3 got %v, want the message %v sent on n1", f, out["id"])
	}
	deliverTook := time.Since(deliverAt)
	t.Logf("client on n3 (%s) received the /send made on n1 (%s): %v", n3.http, n1.http, out)
	t.Logf("timings: network set-up %s, probe %s, nodes serving %s, convergence %s, connect+send+receive %s",
		setupTook.Round(time.Millisecond), probeTook.Round(time.Millisecond), startTook.Round(time.Millisecond),
		convergeTook.Round(time.Millisecond), deliverTook.Round(time.Millisecond))
}

// netnsLab is everything TestMultiHostNamespaces creates on the host. All
// names carry a random suffix, so parallel runs and leftovers of a killed
// run cannot clash.
type netnsLab struct {
	t         *testing.T
	ipPath    string
	suffix    string   // 6 hex digits
	subnet    string   // "10.231.X"
	bridge    string   // in the root namespace, address subnet.254/24
	nss       []string // one per node, address subnet.(i+1)/24
	hostVeths []string // veth ends on the bridge
	nsVeths   []string // their peers, moved into nss[i]
	created   map[string]bool
	nodes     []*netnsNode
	client    *http.Client
}

func newNetnsLab(t *testing.T, ipPath string) *netnsLab {
	l := &netnsLab{t: t, ipPath: ipPath, created: map[string]bool{}}
	l.suffix = hex.EncodeToString(netnsRandom(t, 3))
	l.bridge = "wsmb" + l.suffix
	for i := 1; i <= 3; i++ {
		l.nss = append(l.nss, fmt.Sprintf("wsmesh-%s-n%d", l.suffix, i))
		l.hostVeths = append(l.hostVeths, fmt.Sprintf("wsmh%d%s", i, l.suffix))
		l.nsVeths = append(l.nsVeths, fmt.Sprintf("wsmn%d%s", i, l.suffix))
	}
	// No proxy from the environment: these addresses exist only here.
	l.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	return l
}

func (l *netnsLab) nodeIP(i int) string { return fmt.Sprintf("%s.%d", l.subnet, i+1) }

// claimSubnet gives the bridge 10.231.X.254/24, X random and used by no
// other address or route on this host. A parallel run that picked the same
// X at the same moment shows up as a second interface in the subnet: both
// then drop it and pick again.
func (l *netnsLab) claimSubnet() {
	t := l.t
	t.Helper()
	var used string
	for range 32 {
		addrs, _ := l.ip("-o", "-4", "addr", "show")
		routes, _ := l.ip("-4", "route", "show", "table", "all")
		used = addrs + "\n" + routes
		s := fmt.Sprintf("10.231.%d", netnsRandom(t, 1)[0])
		if strings.Contains(used, s+".") {
			continue
		}
		l.must("addr", "add", s+".254/24", "dev", l.bridge)
		addrs, err := l.ip("-o", "-4", "addr", "show", "to", s+".0/24")
		if err != nil {
			t.Fatal(err)
		}
		if n := len(strings.Split(addrs, "\n")); n == 1 {
			l.subnet = s
			return
		}
		l.must("addr", "del", s+".254/24", "dev", l.bridge)
	}
	t.Fatalf("no free 10.231.X.0/24 for the bridge after 32 tries; addresses and routes:\n%s", used)
}

// ip runs the ip command (bounded to 10 s) and returns its trimmed output.
func (l *netnsLab) ip(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, l.ipPath, args...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("`ip %s`: %v: %s", strings.Join(args, " "), err, s)
	}
	return s, nil
}

// must runs a set-up command. A machine that forbids it skips the test and
// says so; any other failure fails it.
func (l *netnsLab) must(args ...string) {
	l.t.Helper()
	out, err := l.ip(args...)
	if err == nil {
		return
	}
	switch {
	case strings.Contains(out, "Operation not permitted") || strings.Contains(out, "Permission denied"):
		l.t.Skipf("this machine forbids network namespaces/links for this process (root without CAP_SYS_ADMIN/CAP_NET_ADMIN, e.g. an unprivileged container): %v", err)
	case strings.Contains(out, "Unknown device type") || strings.Contains(out, "not supported") || strings.Contains(out, "Not supported"):
		l.t.Skipf("this kernel cannot make the test's network (no veth/bridge support): %v", err)
	}
	l.t.Fatalf("network set-up: %v", err)
}

// setup creates the namespaces, the bridge and the veth pairs.
func (l *netnsLab) setup() {
	for _, ns := range l.nss {
		l.must("netns", "add", ns)
		l.created[ns] = true
	}
	l.must("link", "add", l.bridge, "type", "bridge")
	l.created[l.bridge] = true
	l.claimSubnet()
	l.must("link", "set", l.bridge, "up")
	for i, ns := range l.nss {
		host, peer := l.hostVeths[i], l.nsVeths[i]
		l.must("link", "add", host, "type", "veth", "peer", "name", peer)
		l.created[host] = true
		l.must("link", "set", peer, "netns", ns)
		l.must("link", "set", host, "master", l.bridge)
		l.must("link", "set", host, "up")
		l.must("-n", ns, "link", "set", "lo", "up")
		l.must("-n", ns, "addr", "add", l.nodeIP(i)+"/24", "dev", peer)
		l.must("-n", ns, "link", "set", peer, "up")
	}
}

// inNetns runs fn on an OS thread switched into network namespace ns, and
// switches the thread back afterwards. Sockets fn creates belong to ns for
// their whole life, whichever thread uses them later. If the thread cannot
// be switched back it stays locked, so the runtime retires it rather than
// reusing it in the wrong namespace.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
		target.Close()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns into %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("setns back from %s: %w", ns, err))
			return // still locked: the thread is not reused
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// probePaths checks, before any node runs, that TCP and UDP pass between
// every pair of namespaces (the gossip and relay paths) and that TCP from
// this process reaches each namespace (the client paths). The nodes' own
// failures would say much less about a host that filters the bridge.
func (l *netnsLab) probePaths() {
	t := l.t
	type probeEnd struct {
		tcp net.Listener
		udp net.PacketConn
	}
	ends := make([]probeEnd, len(l.nss))
	defer func() {
		for _, e := range ends {
			if e.tcp != nil {
				e.tcp.Close()
			}
			if e.udp != nil {
				e.udp.Close()
			}
		}
	}()
	for i, ns := range l.nss {
		ip := l.nodeIP(i)
		err := inNetns(ns, func() (err error) {
			if ends[i].tcp, err = net.Listen("tcp", net.JoinHostPort(ip, "0")); err != nil {
				return err
			}
			ends[i].udp, err = net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
			return err
		})
		if err != nil {
			t.Fatalf("probe listeners in %s: %v", ns, err)
		}
		go func(ln net.Listener) { // answers "ok" to every connection
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				_, _ = c.Write([]byte("ok"))
				c.Close()
			}
		}(ends[i].tcp)
		go func(pc net.PacketConn) { // echoes every datagram
			buf := make([]byte, 64)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}(ends[i].udp)
	}

	// Each probe gets 5 s: enough for a lost SYN or datagram and a busy
	// machine, short enough for a clear failure.
	const probeLimit = 5 * time.Second
	tcpProbe := func(to string) error {
		c, err := net.DialTimeout("tcp", to, probeLimit)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(probeLimit))
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "ok" {
			return fmt.Errorf("read %q: %v", b, err)
		}
		return nil
	}
	udpProbe := func(to string) error {
		c, err := net.Dial("udp", to)
		if err != nil {
			return err
		}
		defer c.Close()
		// A datagram every 500 ms until any echo comes back: one answer
		// proves the path both ways, whichever datagram it echoes.
		deadline := time.Now().Add(probeLimit)
		buf := make([]byte, 64)
		sent := 0
		for time.Now().Before(deadline) {
			if _, err := c.Write([]byte("probe-" + strconv.Itoa(sent))); err != nil {
				return err
			}
			sent++
			next := time.Now().Add(500 * time.Millisecond)
			if next.After(deadline) {
				next = deadline
			}
			_ = c.SetReadDeadline(next)
			n, err := c.Read(buf)
			if err == nil && strings.HasPrefix(string(buf[:n]), "probe-") {
				return nil
			}
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return err
			}
		}
		return fmt.Errorf("no echo to %d datagrams in %s", sent, probeLimit)
	}

	// All probes at once: on a filtering host each one waits out its timeout.
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		failures []string
	)
	probe := func(from string, check func() error, format string, args ...any) {
		wg.Go(func() {
			var err error
			if from == "" {
				err = check()
			} else {
				err = inNetns(from, check)
			}
			if err != nil {
				mu.Lock()
				failures = append(failures, fmt.Sprintf(format, args...)+": "+err.Error())
				mu.Unlock()
			}
		})
	}
	for j := range l.nss {
		to := ends[j].tcp.Addr().String()
		probe("", func() error { return tcpProbe(to) }, "TCP root namespace (%s.254, bridge %s) -> %s %s", l.subnet, l.bridge, l.nss[j], to)
	}
	for i, from := range l.nss {
		for j, to := range l.nss {
			if i == j {
				continue
			}
			tcpTo, udpTo := ends[j].tcp.Addr().String(), ends[j].udp.LocalAddr().String()
			probe(from, func() error { return tcpProbe(tcpTo) }, "TCP %s (%s) -> %s %s", from, l.nodeIP(i), to, tcpTo)
			probe(from, func() error { return udpProbe(udpTo) }, "UDP %s (%s) -> %s %s", from, l.nodeIP(i), to, udpTo)
		}
	}
	wg.Wait()
	slices.Sort(failures)
	if len(failures) > 0 {
		t.Fatalf("the network the test built does not pass traffic (checked before any wsmesh node runs):\n  %s\n%s",
			strings.Join(failures, "\n  "), l.hostFilterReport())
	}
}

// hostFilterReport describes what on this host can filter traffic across
// the test's bridge. It only reads.
func (l *netnsLab) hostFilterReport() string {
	var b strings.Builder
	b.WriteString("The bridge is layer 2: traffic between the namespaces needs no IP forwarding and no NAT.\n")
	if v, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		fmt.Fprintf(&b, "br_netfilter is loaded and net.bridge.bridge-nf-call-iptables = %s", strings.TrimSpace(string(v)))
		if strings.TrimSpace(string(v)) == "1" {
			b.WriteString(": bridged IPv4 between the namespaces passes the host's iptables/nftables FORWARD chain, and a DROP policy or rule there (Docker and ufw set one) would drop it")
		}
		b.WriteString(".\n")
	} else {
		b.WriteString("br_netfilter is not loaded: iptables does not see bridged traffic.\n")
	}
	if v, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil {
		fmt.Fprintf(&b, "net.ipv4.ip_forward = %s (not needed here).\n", strings.TrimSpace(string(v)))
	}
	show := func(label, name string, args ...string) {
		path, err := exec.LookPath(name)
		if err != nil {
			fmt.Fprintf(&b, "%s: %s is not installed.\n", label, name)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
		s := strings.TrimSpace(string(out))
		if len(s) > 3000 {
			s = s[:3000] + "\n..."
		}
		fmt.Fprintf(&b, "%s (%v):\n%s\n", label, err, s)
	}
	show("iptables -S FORWARD", "iptables", "-w", "5", "-S", "FORWARD")
	show("nft list ruleset", "nft", "list", "ruleset")
	if out, err := l.ip("-s", "link", "show", "master", l.bridge); err == nil {
		fmt.Fprintf(&b, "bridge ports:\n%s\n", out)
	}
	for _, ns := range l.nss {
		if out, err := l.ip("-n", ns, "-br", "addr"); err == nil {
			fmt.Fprintf(&b, "%s:\n%s\n", ns, out)
		}
	}
	return b.String()
}

// poll checks cond every 20 ms until it holds, failing the test after limit
// with cond's last word and what the host's firewall looks like.
func (l *netnsLab) poll(what string, limit time.Duration, cond func() (bool, string)) {
	l.t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, last := cond()
		if ok {
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			l.t.Fatalf("timed out after %s waiting for %s; last: %s\n%s", limit, what, last, l.hostFilterReport())
		}
	}
}

// netnsNode is a node process in its own namespace.
type netnsNode struct {
	name, ns         string
	http, gossip     string // its namespace address :8080 and :7946
	cfgPath, logPath string
	apiKey           string
	api              *testsupport.Client // for token and dial
	client           *http.Client
	cmd              *exec.Cmd
	exited           chan error // receives cmd.Wait's result once
	running          bool
}

// start runs `ip netns exec <ns> <bin> serve -config <file>` and waits
// until the node logs (JSON) that it serves and answers /healthz through
// the bridge. ip execs the binary in place: the process is the node.
func (l *netnsLab) start(n *netnsNode, bin string) {
	t := l.t
	t.Helper()
	n.client = l.client
	logf, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(l.ipPath, "netns", "exec", n.ns, bin, "serve", "-config", n.cfgPath)
	for _, kv := range os.Environ() { // the test's config only
		if !strings.HasPrefix(kv, "WSMESH_") {
			n.cmd.Env = append(n.cmd.Env, kv)
		}
	}
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	err = n.cmd.Start()
	logf.Close() // the child has its own copy
	if err != nil {
		t.Fatal(err)
	}
	n.exited, n.running = make(chan error, 1), true
	l.nodes = append(l.nodes, n) // killed by l.cleanup
	go func(cmd *exec.Cmd, exited chan<- error) { exited <- cmd.Wait() }(n.cmd, n.exited)

	deadline := time.NewTimer(testsupport.WaitLimit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !n.serving(t) || !n.healthy() {
		select {
		case err := <-n.exited:
			n.running = false
			t.Fatalf("%s exited before serving: %v\n%s", n.name, err, n.logTail(20))
		case <-deadline.C:
			t.Fatalf("%s did not serve on %s within %s\n%s\n%s", n.name, n.http, testsupport.WaitLimit, n.logTail(20), l.hostFilterReport())
		case <-tick.C:
		}
	}
	// The process is the node, in its namespace: killing it stops the node.
	pid := n.cmd.Process.Pid
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != bin {
		t.Fatalf("%s: pid %d runs %q (%v), want %s", n.name, pid, exe, err, bin)
	}
	var procNS, wantNS syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &procNS); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat("/var/run/netns/"+n.ns, &wantNS); err != nil {
		t.Fatal(err)
	}
	if procNS.Ino != wantNS.Ino || procNS.Dev != wantNS.Dev {
		t.Fatalf("%s: pid %d is not in network namespace %s", n.name, pid, n.ns)
	}
}

// serving reports whether the log holds the JSON line saying the node
// serves on its namespace address; every line must be JSON.
func (n *netnsNode) serving(t *testing.T) bool {
	t.Helper()
	f, err := os.Open(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: log line is not JSON: %q", n.name, sc.Text())
		}
		if m["msg"] == "node serving" && m["node"] == n.name && m["http"] == n.http {
			found = true
		}
	}
	return found
}

func (n *netnsNode) healthy() bool {
	resp, err := n.client.Get("http://" + n.http + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (n *netnsNode) logTail(lines int) string {
	b, _ := os.ReadFile(n.logPath)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return n.name + " (" + n.ns + ") log:\n" + strings.Join(ls, "\n")
}

type netnsCluster struct {
	Node    string `json:"node"`
	Members []struct {
		Name     string  `json:"name"`
		Addr     string  `json:"addr"`
		State    string  `json:"state"`
		Sessions float64 `json:"sessions"`
	} `json:"members"`
}

// cluster is the node's GET /cluster, asked at its namespace address.
func (n *netnsNode) cluster() (*netnsCluster, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+n.http+"/cluster", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+n.apiKey)
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /cluster on %s: %d %s", n.name, resp.StatusCode, raw)
	}
	var cl netnsCluster
	if err := json.Unmarshal(raw, &cl); err != nil {
		return nil, fmt.Errorf("GET /cluster on %s: %v: %s", n.name, err, raw)
	}
	return &cl, nil
}

func (n *netnsNode) post(path, body string) (int, map[string]any, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+n.http+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+n.apiKey)
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return resp.StatusCode, nil, err
	}
	return resp.StatusCode, out, nil
}

// cleanup kills the nodes, deletes the veths, the bridge and the
// namespaces, and checks that nothing named with the suffix is left. It
// runs even when set-up failed half way, and does not stop at an error.
func (l *netnsLab) cleanup() {
	t := l.t
	start := time.Now()
	for _, n := range l.nodes {
		if !n.running {
			continue
		}
		_ = n.cmd.Process.Kill()
		select {
		case <-n.exited:
			n.running = false
		case <-time.After(testsupport.WaitLimit):
			t.Errorf("cleanup: %s (pid %d) not reaped %s after SIGKILL", n.name, n.cmd.Process.Pid, testsupport.WaitLimit)
		}
	}
	// Nothing else may run in the namespaces: a process there would keep
	// the namespace alive after `ip netns del`. Only this test puts
	// processes there, so whatever is found is ours.
	for _, ns := range l.nss {
		if !l.created[ns] {
			continue
		}
		out, err := l.ip("netns", "pids", ns)
		if err != nil || out == "" {
			continue
		}
		t.Errorf("cleanup: processes still in %s: %s; killing them (but not this test, pid %d)", ns, strings.Join(strings.Fields(out), " "), os.Getpid())
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	// Deleting a veth end deletes its peer (in the namespace) too.
	for _, name := range append(slices.Clone(l.hostVeths), l.bridge) {
		if l.created[name] {
			if _, err := l.ip("link", "del", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				t.Errorf("cleanup: %v", err)
			}
		}
	}
	for _, ns := range l.nss {
		if l.created[ns] {
			if _, err := l.ip("netns", "del", ns); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	}

	// Nothing named with the suffix may remain. Namespace teardown is
	// asynchronous in the kernel, so allow it a few seconds.
	var left []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		left = left[:0]
		nsList, err1 := l.ip("netns", "list")
		links, err2 := l.ip("-o", "link", "show")
		for _, line := range strings.Split(nsList+"\n"+links, "\n") {
			if strings.Contains(line, l.suffix) {
				left = append(left, strings.TrimSpace(line))
			}
		}
		for _, ns := range l.nss {
			if _, err := os.Stat("/var/run/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
				left = append(left, "/var/run/netns/"+ns)
			}
		}
		if err := errors.Join(err1, err2); err != nil {
			left = append(left, "could not list: "+err.Error())
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		// Bounded by the deadline; each round runs two ip commands.
		<-time.After(50 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("cleanup: left behind (suffix %s):\n%s", l.suffix, strings.Join(left, "\n"))
		return
	}
	if len(l.created) > 0 {
		t.Logf("cleanup: removed netns %s, bridge %s, veths %s (and peers %s) in %s; nothing named *%s* left",
			strings.Join(l.nss, ", "), l.bridge, strings.Join(l.hostVeths, ", "), strings.Join(l.nsVeths, ", "),
			time.Since(start).Round(time.Millisecond), l.suffix)
	}
}

func netnsRandom(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
