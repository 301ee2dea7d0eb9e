package loadgen

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"wsmesh/session"
)

// Usage is the text of `wsmesh bench -h`.
const Usage = `Usage: wsmesh bench [flags]

Load-tests wsmesh nodes: opens WebSocket clients, calls POST /send (or,
with -room, POST /publish into a room every client joins) and measures,
end to end, what the clients receive. It starts its nodes itself
with -spawn N, or tests running ones given with -nodes (and -config for
their jwt_secret and api key).

Nodes:
  -spawn N            start N nodes (this binary, "serve") on 127.0.0.1 with free
                      ports and generated secrets; stopped at the end
  -keep               with -spawn: keep the temp dir with their configs and logs
  -nodes URLS         running nodes' HTTP addresses, comma-separated
                      (default: the config's http.listen)
  -config FILE        config with the nodes' jwt_secret and api key
                      (default ./config.toml, like serve)
  -clients-on SEL     nodes the clients connect to (default all, round robin)
  -send-to SEL        nodes that get the POST /send calls (default all, round robin)
                      SEL: 1-based node numbers or addresses, e.g. "2" or "1,3"

Clients:
  -clients N          WebSocket clients (default 100)
  -users U            distinct users "u0".."uU-1" (default = clients); clients
                      beyond U are more devices of the same users
  -connect-rate R     new connections per second, all workers together (default 5000)
  -source-ips RANGE   dial from these source addresses, round robin, e.g.
                      127.0.0.2-127.0.0.9: one address gives about 28k
                      connections per node (the ephemeral port range)
  -workers W          client worker processes (default ceil(clients/15000));
                      0: the clients run in this process

Load:
  -recipients K       users per POST /send (default 1); spawned nodes take up to
                      K per call (their http.max_users_per_send, 1000 by default)
  -rate R             sends per second (default 0: as fast as -senders allow)
  -senders S          concurrent POST /send calls (default 8)
  -payload BYTES      size of each message's data (default 128; at least the
                      ~50 bytes of its send time and sequence number)
  -messages M         stop after M sends (default: no count, up to 10,000,000)
  -duration D         stop sending after D (default 30s); with -idle: how long to hold
  -idle               only connect and hold: RSS per connection and connect rate

Rooms (instead of /send):
  -room NAME          every client joins room NAME (a join frame, allowed by a
                      rooms claim in its token), then POST /publish into it
  -publishers P       with -room: concurrent POST /publish calls (default 8);
                      -rate, -messages and -duration then count publishes
  -join-probes N      with -room: probes of join → first publish from another
                      node, one at a time, before publishing (default 100;
                      0: none; they need 2 or more nodes)

Output:
  -json               print one JSON summary object on stdout (nothing else on stdout)

Exit codes: 0 the run completed (read the summary for errors and missing
messages), 1 it could not run (nodes unreachable, a node failed, interrupted),
2 usage error.
`

// Limits of the flags' values.
const (
	maxClients       = 1_000_000
	maxMessages      = 10_000_000
	maxPayload       = 512 << 10
	maxDuration      = 24 * time.Hour
	maxSpawn         = 32
	maxSenders       = 1024
	defaultPerWorker = 15000
	fdReserve        = 1000 // open files a process keeps for other than client sockets
	maxJoinProbes    = 10000
)

// Options are bench's flags, parsed and checked.
type Options struct {
	ConfigPath  string
	Nodes       []string // host:port of each node's HTTP listener; with -spawn, filled in once they run
	ClientsOn   []int    // indexes into Nodes (0-based)
	SendTo      []int    // indexes into Nodes (0-based)
	Spawn       int
	Keep        bool
	Clients     int
	Users       int
	Recipients  int
	Rate        float64
	Senders     int
	Duration    time.Duration
	Messages    int64 // 0: bounded by Duration and maxMessages only
	Payload     int
	JSON        bool
	SourceIPs   []netip.Addr
	Workers     int // 0: clients in this process
	ConnectRate float64
	Idle        bool
	Room        string // -room: publish into this room instead of /send
	Publishers  int    // -room: concurrent /publish calls
	JoinProbes  int    // -room: join → first publish from another node, samples

	// Exe is the binary run as nodes (serve) and workers (bench -worker):
	// os.Executable() unless set (tests set it to a freshly built wsmesh).
	Exe string
}

// UsageError is a bad flag or flag value: exit code 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// ParseArgs parses and checks bench's arguments. Errors are *UsageError
// (or flag.ErrHelp for -h).
func ParseArgs(args []string) (*Options, error) {
	o := &Options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var nodes, clientsOn, sendTo, sources string
	fs.StringVar(&o.ConfigPath, "config", "", "")
	fs.StringVar(&nodes, "nodes", "", "")
	fs.StringVar(&clientsOn, "clients-on", "", "")
	fs.StringVar(&sendTo, "send-to", "", "")
	fs.IntVar(&o.Spawn, "spawn", 0, "")
	fs.BoolVar(&o.Keep, "keep", false, "")
	fs.IntVar(&o.Clients, "clients", 100, "")
	fs.IntVar(&o.Users, "users", 0, "")
	fs.IntVar(&o.Recipients, "recipients", 1, "")
	fs.Float64Var(&o.Rate, "rate", 0, "")
	fs.IntVar(&o.Senders, "senders", 8, "")
	fs.DurationVar(&o.Duration, "duration", 30*time.Second, "")
	fs.Int64Var(&o.Messages, "messages", 0, "")
	fs.IntVar(&o.Payload, "payload", 128, "")
	fs.BoolVar(&o.JSON, "json", false, "")
	fs.StringVar(&sources, "source-ips", "", "")
	fs.IntVar(&o.Workers, "workers", -1, "")
	fs.Float64Var(&o.ConnectRate, "connect-rate", 5000, "")
	fs.BoolVar(&o.Idle, "idle", false, "")
	fs.StringVar(&o.Room, "room", "", "")
	fs.IntVar(&o.Publishers, "publishers", 8, "")
	fs.IntVar(&o.JoinProbes, "join-probes", 100, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &UsageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// Nodes.
	switch {
	case o.Spawn < 0 || o.Spawn > maxSpawn:
		return nil, usagef("-spawn %d: want 1 to %d nodes (or leave it out and give -nodes)", o.Spawn, maxSpawn)
	case o.Spawn > 0 && set["nodes"]:
		return nil, usagef("-spawn and -nodes exclude each other: -spawn starts its own nodes")
	case o.Spawn > 0 && set["config"]:
		return nil, usagef("-spawn and -config exclude each other: spawned nodes get a generated config and secrets")
	case o.Keep && o.Spawn == 0:
		return nil, usagef("-keep applies only with -spawn (it keeps the spawned nodes' configs and logs)")
	}
	if set["nodes"] {
		for _, s := range strings.Split(nodes, ",") {
			hp, err := parseNode(strings.TrimSpace(s))
			if err != nil {
				return nil, usagef("-nodes: %v", err)
			}
			o.Nodes = append(o.Nodes, hp)
		}
	}
	numNodes := o.Spawn
	if numNodes == 0 {
		numNodes = max(len(o.Nodes), 1) // none: the config's own node
	}
	var err error
	if o.ClientsOn, err = parseSelector("-clients-on", clientsOn, o.Nodes, numNodes); err != nil {
		return nil, err
	}
	if o.SendTo, err = parseSelector("-send-to", sendTo, o.Nodes, numNodes); err != nil {
		return nil, err
	}

	// Clients.
	if o.Clients < 1 || o.Clients > maxClients {
		return nil, usagef("-clients %d: want 1 to %d", o.Clients, maxClients)
	}
	if !set["users"] {
		o.Users = o.Clients
	}
	if o.Users < 1 || o.Users > maxClients {
		return nil, usagef("-users %d: want 1 to %d", o.Users, maxClients)
	}
	if o.ConnectRate <= 0 || o.ConnectRate > 1e6 || math.IsNaN(o.ConnectRate) {
		return nil, usagef("-connect-rate %g: want more than 0 and at most 1000000 connections per second", o.ConnectRate)
	}
	if set["source-ips"] {
		if o.SourceIPs, err = parseSourceIPs(sources); err != nil {
			return nil, usagef("-source-ips: %v", err)
		}
	}
	perProcess := maxClientsPerProcess()
	if !set["workers"] {
		o.Workers = (o.Clients + defaultPerWorker - 1) / defaultPerWorker
	}
	switch {
	case o.Workers < 0 || o.Workers > 1000:
		return nil, usagef("-workers %d: want 0 (clients in this process) to 1000", o.Workers)
	case o.Workers == 0 && o.Clients > perProcess:
		return nil, usagef("-workers 0 runs every client in this process, which may hold about %d connections (open files limit %d): use -workers %d or more",
			perProcess, perProcess+fdReserve, (o.Clients+perProcess-1)/perProcess)
	case o.Workers > o.Clients:
		return nil, usagef("-workers %d is more than -clients %d", o.Workers, o.Clients)
	case o.Workers > 0 && (o.Clients+o.Workers-1)/o.Workers > perProcess:
		return nil, usagef("-workers %d would put %d clients in one worker; a process may hold about %d connections (open files limit %d): use -workers %d or more",
			o.Workers, (o.Clients+o.Workers-1)/o.Workers, perProcess, perProcess+fdReserve, (o.Clients+perProcess-1)/perProcess)
	}
	perNode := (o.Clients + len(o.ClientsOn) - 1) / len(o.ClientsOn)
	if o.Spawn > 0 && perNode > perProcess {
		return nil, usagef("-clients %d over %d node(s) is %d connections per spawned node, more than a process may hold here (open files limit %d): spawn more nodes or use -clients-on",
			o.Clients, len(o.ClientsOn), perNode, perProcess+fdReserve)
	}
	if ports := ephemeralPorts(); ports > 0 {
		srcs := max(len(o.SourceIPs), 1)
		if perNode > ports*srcs {
			return nil, usagef("%d connections per node need more than %d source address(es) × %d ephemeral ports: add -source-ips (e.g. 127.0.0.2-127.0.0.%d)",
				perNode, srcs, ports, 1+(perNode+ports-1)/ports)
		}
	}

	// Load.
	if o.Duration <= 0 || o.Duration > maxDuration {
		return nil, usagef("-duration %s: want more than 0 and at most %s", o.Duration, maxDuration)
	}
	if !set["room"] {
		for _, f := range []string{"publishers", "join-probes"} {
			if set[f] {
				return nil, usagef("-%s applies only with -room (it publishes into the room every client joins)", f)
			}
		}
	}
	if o.Idle {
		for _, f := range []string{"recipients", "rate", "senders", "messages", "payload", "send-to", "room"} {
			if set[f] {
				return nil, usagef("-%s does not apply with -idle (it only connects and holds for -duration)", f)
			}
		}
		o.SendTo = nil
		return o, nil
	}
	if set["room"] {
		if err := session.ValidRoom(o.Room); err != nil {
			return nil, usagef("-room %q: %v", o.Room, err)
		}
		if len(o.Room) > session.MaxRoomBytes-len(probeSuffix)-12 {
			return nil, usagef("-room: at most %d bytes (the join probes' rooms add a suffix)", session.MaxRoomBytes-len(probeSuffix)-12)
		}
		for _, f := range []string{"recipients", "senders"} {
			if set[f] {
				return nil, usagef("-%s does not apply with -room: every publish goes to the whole room (-publishers sets the concurrency)", f)
			}
		}
		switch {
		case o.Publishers < 1 || o.Publishers > maxSenders:
			return nil, usagef("-publishers %d: want 1 to %d", o.Publishers, maxSenders)
		case o.JoinProbes < 0 || o.JoinProbes > maxJoinProbes:
			return nil, usagef("-join-probes %d: want 0 to %d", o.JoinProbes, maxJoinProbes)
		}
		o.Recipients, o.Senders = 0, o.Publishers
	} else {
		o.Publishers, o.JoinProbes = 0, 0
	}
	switch {
	case !set["room"] && (o.Recipients < 1 || o.Recipients > o.Users):
		return nil, usagef("-recipients %d: want 1 to -users (%d)", o.Recipients, o.Users)
	case o.Rate < 0 || o.Rate > 1e6 || math.IsNaN(o.Rate):
		return nil, usagef("-rate %g: want 0 (as fast as possible) to 1000000 sends per second", o.Rate)
	case o.Senders < 1 || o.Senders > maxSenders:
		return nil, usagef("-senders %d: want 1 to %d", o.Senders, maxSenders)
	case o.Messages < 0 || o.Messages > maxMessages:
		return nil, usagef("-messages %d: want 1 to %d (0 or unset: until -duration)", o.Messages, maxMessages)
	case o.Payload < 0 || o.Payload > maxPayload:
		return nil, usagef("-payload %d: want 0 to %d bytes", o.Payload, maxPayload)
	}
	return o, nil
}

// parseNode turns "http://host:port" or "host:port" into host:port.
func parseNode(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty address")
	}
	hp := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", fmt.Errorf("%q: %v", s, err)
		}
		if u.Scheme != "http" {
			return "", fmt.Errorf("%q: only http:// nodes are supported (the clients dial plain ws://)", s)
		}
		if u.Path != "" && u.Path != "/" {
			return "", fmt.Errorf("%q: give the node's base address, without a path", s)
		}
		hp = u.Host
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil || host == "" {
		return "", fmt.Errorf("%q: want http://host:port", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("%q: invalid port", s)
	}
	return hp, nil
}

// parseSelector resolves "2", "1,3" or node addresses into 0-based node
// indexes; "" selects every node.
func parseSelector(flagName, s string, nodes []string, numNodes int) ([]int, error) {
	if s == "" {
		all := make([]int, numNodes)
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		idx := -1
		if n, err := strconv.Atoi(part); err == nil {
			if n < 1 || n > numNodes {
				return nil, usagef("%s %s: node %d does not exist (nodes are numbered 1 to %d)", flagName, s, n, numNodes)
			}
			idx = n - 1
		} else if hp, err := parseNode(part); err == nil {
			for i, nd := range nodes {
				if nd == hp {
					idx = i
				}
			}
			if idx < 0 {
				return nil, usagef("%s %s: %s is not one of -nodes", flagName, s, part)
			}
		} else {
			return nil, usagef("%s %s: %q is neither a node number (1 to %d) nor a node address", flagName, s, part, numNodes)
		}
		if !seen[idx] {
			seen[idx] = true
			out = append(out, idx)
		}
	}
	return out, nil
}

// parseSourceIPs reads "127.0.0.2-127.0.0.9" or "127.0.0.2,127.0.0.3".
func parseSourceIPs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%q is not an IPv4 address", lo)
		}
		b := a
		if isRange {
			if b, err = netip.ParseAddr(strings.TrimSpace(hi)); err != nil || !b.Is4() {
				return nil, fmt.Errorf("%q is not an IPv4 address", hi)
			}
			if b.Less(a) {
				return nil, fmt.Errorf("range %s: the end is below the start", part)
			}
		}
		for x := a; ; x = x.Next() {
			if x.IsUnspecified() {
				return nil, fmt.Errorf("%s is not a usable source address", x)
			}
			out = append(out, x)
			if len(out) > 1<<16 {
				return nil, errors.New("more than 65536 addresses")
			}
			if x == b {
				break
			}
		}
	}
	return out, nil
}

// maxClientsPerProcess is how many sockets one process may hold here: the
// hard open files limit, less a reserve.
func maxClientsPerProcess() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Max > 1<<24 {
		return 1 << 24
	}
	return max(int(rl.Max)-fdReserve, 1)
}

// ephemeralPorts is the size of the kernel's local port range, or 0 if
// unknown.
func ephemeralPorts() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0
	}
	return hi - lo + 1
}
