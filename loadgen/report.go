package loadgen

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Summary is what a run measured; -json prints it as one object.
type Summary struct {
	Mode        string `json:"mode"` // "send", "room" or "idle"
	Interrupted bool   `json:"interrupted,omitempty"`

	Config      RunConfig        `json:"config"`
	Nodes       []NodeSummary    `json:"nodes"`
	Workers     []WorkerSummary  `json:"workers"`
	Connections ConnSummary      `json:"connections"`
	Sends       *SendSummary     `json:"sends,omitempty"`
	Publishes   *SendSummary     `json:"publishes,omitempty"` // with -room: the POST /publish calls
	Results     *ResultsSummary  `json:"results,omitempty"`
	Messages    *MessagesSummary `json:"messages,omitempty"`
	Latency     *Latency         `json:"latency,omitempty"` // send time to receive time, per message
	Room        *RoomSummary     `json:"room,omitempty"`
	Idle        *IdleSummary     `json:"idle,omitempty"`
	// BenchCPUS is the CPU time of this bench process (the /send calls,
	// and the clients with -workers 0): with the nodes' and workers', it
	// shows how the machine's CPU was shared.
	BenchCPUS float64  `json:"bench_cpu_s"`
	Warnings  []string `json:"warnings,omitempty"`
}

// RunConfig echoes the settings that shaped the run.
type RunConfig struct {
	Spawned     bool     `json:"spawned"`
	Nodes       []string `json:"nodes"`      // HTTP addresses
	ClientsOn   []string `json:"clients_on"` // node names
	SendTo      []string `json:"send_to,omitempty"`
	Clients     int      `json:"clients"`
	Users       int      `json:"users"`
	Recipients  int      `json:"recipients,omitempty"`
	Room        string   `json:"room,omitempty"`
	Publishers  int      `json:"publishers,omitempty"`
	JoinProbes  int      `json:"join_probes,omitempty"`
	Rate        float64  `json:"rate,omitempty"`
	Senders     int      `json:"senders,omitempty"`
	Messages    int64    `json:"messages,omitempty"`
	DurationS   float64  `json:"duration_s"`
	Payload     int      `json:"payload_bytes,omitempty"`
	Workers     int      `json:"workers"`
	ConnectRate float64  `json:"connect_rate"`
	SourceIPs   int      `json:"source_ips,omitempty"`
	Dir         string   `json:"dir,omitempty"` // -keep: the spawned nodes' configs and logs
}

// NodeSummary is one node's identity and resident memory: before any
// client connected, once all had connected, and at the end (before the
// clients disconnected). Bytes; 0 if it could not be read.
type NodeSummary struct {
	Name      string `json:"name"`
	HTTP      string `json:"http"`
	PID       int    `json:"pid,omitempty"` // spawned nodes
	RSSFrom   string `json:"rss_from"`      // "/proc" (spawned) or "/metrics"
	Sessions  int    `json:"sessions"`      // its own, once all had connected
	RSSBefore int64  `json:"rss_before_bytes"`
	RSSConns  int64  `json:"rss_connected_bytes"`
	RSSAfter  int64  `json:"rss_after_bytes"`
	// RSSPerConn is (rss_after - rss_before) / sessions, with -idle.
	RSSPerConn float64 `json:"rss_per_conn_bytes,omitempty"`
	// CPUS is the CPU time (user + system) the node used from the "before"
	// reading to the "after" one (spawned nodes only).
	CPUS float64 `json:"cpu_s,omitempty"`
	cpu0 time.Duration

	// With -room. RoomMembers is the room's members on this node, as its
	// own GET /rooms/{room} counts them once all had joined.
	RoomMembers int `json:"room_members,omitempty"`
	// FanoutItems is the growth of its wsmesh_fanout_items_received_total
	// over the publishing (from the first publish to the last message
	// received): the publish relay items it received. PublishesElsewhere
	// is the publishes answered 200 that entered through other nodes: with
	// members here, one item each is what the node should receive.
	FanoutItems        *int64 `json:"fanout_items_received,omitempty"`
	PublishesElsewhere *int64 `json:"publishes_via_other_nodes,omitempty"`
	fanout0            float64
}

// WorkerSummary is one client worker process.
type WorkerSummary struct {
	PID      int     `json:"pid,omitempty"` // 0: in the bench process
	Clients  int     `json:"clients"`
	RSSBytes int64   `json:"rss_bytes,omitempty"`
	CPUS     float64 `json:"cpu_s"` // its CPU time, connecting included
}

// ConnSummary is the WebSocket clients' connections.
type ConnSummary struct {
	Attempted int   `json:"attempted"`
	Opened    int64 `json:"opened"`  // handshake completed
	Failed    int64 `json:"failed"`  // dial or handshake failed
	Dropped   int64 `json:"dropped"` // closed by the node or the network before the end
	// DropReasons counts drops by close code ("4002", "1012", ...) or "network".
	DropReasons map[string]int64 `json:"drop_reasons,omitempty"`
	Errors      []string         `json:"errors,omitempty"` // the first connect errors
	// ConnectS is the time from the first dial to the last handshake (the
	// slowest worker); ConnectRate is opened / ConnectS.
	ConnectS    float64 `json:"connect_s"`
	ConnectRate float64 `json:"connect_rate"`
	// RegisteredS is the time from the first dial until every node's table
	// listed every session, when that happened.
	RegisteredS float64 `json:"registered_s,omitempty"`
}

// SendSummary is the POST /send calls.
type SendSummary struct {
	Started         int64            `json:"started"`
	OK              int64            `json:"ok"`                  // answered 200
	HTTPErrors      int64            `json:"http_errors"`         // answered, not 200
	TransportErrors int64            `json:"transport_errors"`    // no answer or an unreadable one
	Cancelled       int64            `json:"cancelled,omitempty"` // in flight when interrupted
	ByStatus        map[string]int64 `json:"by_status,omitempty"`
	Errors          []string         `json:"errors,omitempty"`
	DurationS       float64          `json:"duration_s"` // first call to last answer
	Rate            float64          `json:"rate"`       // ok / duration_s
	Latency         Latency          `json:"latency"`    // of the calls answered 200
}

// ResultsSummary adds up the /send answers' per-session results, or the
// /publish answers' counts.
type ResultsSummary struct {
	Delivered int64 `json:"delivered"`
	Offline   int64 `json:"offline"`
	Error     int64 `json:"error"`
	// Unreachable is the sessions /send answered "unreachable" (their node
	// did not answer in time; the message may still have reached them),
	// or, with -room, the nodes the /publish answers named unreachable,
	// added up.
	Unreachable int64 `json:"unreachable,omitempty"`
}

// RoomSummary is the room's side of a -room run.
type RoomSummary struct {
	Room string `json:"room"`
	// Members is the smallest member count the nodes' GET /rooms/{room}
	// gave once every client had joined (or the wait gave up).
	Members    int   `json:"members"`
	Joined     int64 `json:"joined"`      // "joined" frames the clients received
	JoinErrors int64 `json:"join_errors"` // joins refused or not sent
	// JoinedS is the time from the first join frame until every node
	// counted every member.
	JoinedS float64 `json:"joined_s,omitempty"`
	// JoinLatency is join frame sent → joined frame received, per client
	// (the joins paced at -connect-rate).
	JoinLatency Latency `json:"join_latency"`
	// LastMember is, per publish, the latest receipt at any member minus
	// the publish's send time: the time until the whole room had it.
	// Publishes some member reported delivered never received are left
	// out, and counted in LastMemberIncomplete.
	LastMember           Latency `json:"last_member_latency"`
	LastMemberIncomplete int64   `json:"last_member_incomplete"`
	// Probes measure join → first publish from another node.
	Probes *ProbeSummary `json:"join_probes,omitempty"`
}

// MessagesSummary compares what /send reported delivered with what the
// clients received, per message (sequence number).
type MessagesSummary struct {
	Expected int64 `json:"expected"` // results "delivered"
	Received int64 `json:"received"` // message frames carrying our data
	Missing  int64 `json:"missing"`  // reported delivered, never received
	Extra    int64 `json:"extra"`    // received beyond what was reported delivered
	// MissingSeqs are the first sequence numbers with a message missing.
	MissingSeqs []int64 `json:"missing_seqs,omitempty"`
	Unparsed    int64   `json:"unparsed"` // message frames whose data was not ours
	Other       int64   `json:"other"`    // pong, evicted, ...
	Negative    int64   `json:"negative_latency"`
	// Rate is received / (last receipt - first send): delivered messages
	// per second at the clients.
	DurationS float64 `json:"duration_s"`
	Rate      float64 `json:"rate"`
}

// IdleSummary is the -idle measurement.
type IdleSummary struct {
	HeldS float64 `json:"held_s"`
	// RSSPerConn is the nodes' RSS growth over their sessions, all nodes
	// together: sum(rss_after - rss_before) / sum(sessions).
	RSSPerConn float64 `json:"rss_per_conn_bytes"`
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// writeText prints the summary for people.
func (s *Summary) writeText(w io.Writer) {
	c := s.Config
	p := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-12s %s\n", label, fmt.Sprintf(format, args...))
	}
	origin := "running"
	if c.Spawned {
		origin = "spawned"
	}
	title := fmt.Sprintf("%d %s node(s); %d clients of %d users on %s", len(c.Nodes), origin, c.Clients, c.Users, strings.Join(c.ClientsOn, ","))
	rate := "as fast as possible"
	if c.Rate > 0 {
		rate = fmt.Sprintf("%g/s", c.Rate)
	}
	switch s.Mode {
	case "send":
		title += fmt.Sprintf("; /send to %s, %d recipient(s), %s with %d senders, %d B data",
			strings.Join(c.SendTo, ","), c.Recipients, rate, c.Senders, c.Payload)
	case "room":
		title += fmt.Sprintf("; room %q, /publish to %s, %s with %d publishers, %d B data",
			c.Room, strings.Join(c.SendTo, ","), rate, c.Publishers, c.Payload)
	}
	fmt.Fprintf(w, "wsmesh bench (%s): %s\n", s.Mode, title)
	if s.Interrupted {
		fmt.Fprintln(w, "INTERRUPTED: the numbers cover the run until then")
	}
	cs := s.Connections
	line := fmt.Sprintf("%d/%d opened, %d failed, %d dropped; connected in %.2fs (%.0f/s)",
		cs.Opened, cs.Attempted, cs.Failed, cs.Dropped, cs.ConnectS, cs.ConnectRate)
	if cs.RegisteredS > 0 {
		line += fmt.Sprintf(", in every table after %.2fs", cs.RegisteredS)
	}
	p("connections", "%s", line)
	if len(cs.DropReasons) > 0 {
		p("", "dropped by close code: %s", fmtCounts(cs.DropReasons))
	}
	for _, e := range cs.Errors {
		p("", "connect error: %s", e)
	}
	if rs := s.Room; rs != nil {
		p("room", "%q: %d members counted by every node after %.2fs; %d joined, %d join errors",
			rs.Room, rs.Members, rs.JoinedS, rs.Joined, rs.JoinErrors)
		p("", "join → joined: p50 %s  p99 %s  max %s", fmtMS(rs.JoinLatency.P50MS), fmtMS(rs.JoinLatency.P99MS), fmtMS(rs.JoinLatency.MaxMS))
		if pr := rs.Probes; pr != nil {
			p("join probes", "%d ok of %d (%d timed out, %d failed); %.1f /publish calls each on average",
				pr.OK, pr.Probes, pr.TimedOut, pr.Failed, pr.PublishCalls)
			l := pr.FirstPublish
			p("", "join → first publish from another node: p50 %s  p90 %s  p99 %s  max %s",
				fmtMS(l.P50MS), fmtMS(l.P90MS), fmtMS(l.P99MS), fmtMS(l.MaxMS))
			for _, e := range pr.Errors {
				p("", "probe error: %s", e)
			}
		}
	}
	sd, calls, path := s.Sends, "sends", "/send"
	if s.Publishes != nil {
		sd, calls, path = s.Publishes, "publishes", "/publish"
	}
	if sd != nil {
		p(calls, "%d ok of %d in %.2fs (%.0f/s); %d HTTP errors, %d transport errors",
			sd.OK, sd.Started, sd.DurationS, sd.Rate, sd.HTTPErrors, sd.TransportErrors)
		p("", "%s call: p50 %s  p99 %s  max %s", path, fmtMS(sd.Latency.P50MS), fmtMS(sd.Latency.P99MS), fmtMS(sd.Latency.MaxMS))
		if len(sd.ByStatus) > 0 {
			p("", "by status: %s", fmtCounts(sd.ByStatus))
		}
		for _, e := range sd.Errors {
			p("", "error: %s", e)
		}
	}
	if r := s.Results; r != nil {
		if s.Mode == "room" {
			p("results", "%d delivered, %d unreachable nodes", r.Delivered, r.Unreachable)
		} else {
			line := fmt.Sprintf("%d delivered, %d offline, %d error", r.Delivered, r.Offline, r.Error)
			if r.Unreachable > 0 {
				line += fmt.Sprintf(", %d unreachable", r.Unreachable)
			}
			p("results", "%s", line)
		}
	}
	if m := s.Messages; m != nil {
		p("messages", "%d expected, %d received, %d missing, %d extra; %.0f msgs/s at the clients over %.2fs",
			m.Expected, m.Received, m.Missing, m.Extra, m.Rate, m.DurationS)
		if m.Unparsed+m.Negative > 0 {
			p("", "%d frames not ours, %d negative latencies", m.Unparsed, m.Negative)
		}
		if len(m.MissingSeqs) > 0 {
			p("", "first messages missing: %v", m.MissingSeqs)
		}
	}
	if l := s.Latency; l != nil {
		p("latency", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s, %d messages)",
			fmtMS(l.P50MS), fmtMS(l.P90MS), fmtMS(l.P99MS), fmtMS(l.P999MS), fmtMS(l.MaxMS), fmtMS(l.MeanMS), l.Count)
	}
	if rs := s.Room; rs != nil && s.Messages != nil {
		l := rs.LastMember
		p("last member", "p50 %s  p90 %s  p99 %s  max %s  (mean %s, %d publishes; %d incomplete left out)",
			fmtMS(l.P50MS), fmtMS(l.P90MS), fmtMS(l.P99MS), fmtMS(l.MaxMS), fmtMS(l.MeanMS), l.Count, rs.LastMemberIncomplete)
		var items []string
		for _, n := range s.Nodes {
			if n.FanoutItems != nil && n.PublishesElsewhere != nil {
				items = append(items, fmt.Sprintf("%s %d (%d members, %d publishes via others)", n.Name, *n.FanoutItems, n.RoomMembers, *n.PublishesElsewhere))
			}
		}
		if len(items) > 0 {
			p("relay items", "received: %s", strings.Join(items, ", "))
		}
	}
	for _, n := range s.Nodes {
		line := fmt.Sprintf("%s %s: %s before, %s connected, %s after (%d sessions)",
			n.Name, n.HTTP, mib(n.RSSBefore), mib(n.RSSConns), mib(n.RSSAfter), n.Sessions)
		if n.RSSPerConn > 0 {
			line += fmt.Sprintf(", %.1f KiB/conn", n.RSSPerConn/1024)
		}
		p("node RSS", "%s", line)
	}
	cpu := fmt.Sprintf("bench %.1fs", s.BenchCPUS)
	for i, w := range s.Workers {
		cpu += fmt.Sprintf(", worker %d %.1fs", i+1, w.CPUS)
	}
	for _, n := range s.Nodes {
		if n.PID != 0 {
			cpu += fmt.Sprintf(", %s %.1fs", n.Name, n.CPUS)
		}
	}
	p("CPU time", "%s", cpu)
	if s.Idle != nil {
		p("idle", "held %.1fs; %.1f KiB per connection (nodes' RSS growth over their sessions)", s.Idle.HeldS, s.Idle.RSSPerConn/1024)
	}
	for _, w := range s.Warnings {
		p("WARNING", "%s", w)
	}
}

func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

func fmtMS(ms float64) string { return fmtNS(uint64(ms * 1e6)) }

func fmtCounts(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + strconv.FormatInt(m[k], 10)
	}
	return strings.Join(parts, ", ")
}
