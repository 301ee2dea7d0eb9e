// Package metrics exposes a node's numbers to Prometheus: it reads the
// running totals the session hub, the cluster and the relay keep, and
// owns the histograms they report into. One Registry per node, no global
// state.
package metrics

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"wsmesh/cluster"
	"wsmesh/relay"
	"wsmesh/session"
	"wsmesh/upstream"
)

// Sources are what the metrics read, on every scrape.
type Sources struct {
	Hub     *session.Hub
	Cluster *cluster.Cluster
	API     *relay.Server
	// Upstream, if set, is the sender of events to the backend.
	Upstream *upstream.Sender
	// Ready, if set, is what GET /readyz answers (wsmesh_ready).
	Ready func() (ready bool, reasons []string)
	// Version and Revision label wsmesh_build_info.
	Version, Revision string
}

// Metrics is one node's registry and histograms.
type Metrics struct {
	reg        *prometheus.Registry
	batchItems prometheus.Histogram
	batchRTT   prometheus.Histogram
	forward    *prometheus.HistogramVec
	upPost     *prometheus.HistogramVec
}

// New makes the histograms. Call Register once the sources exist.
func New() *Metrics {
	return &Metrics{
		reg: prometheus.NewRegistry(),
		batchItems: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wsmesh_relay_batch_items",
			Help:    "Items per batch a link had acknowledged (relay calls, table deltas, snapshots).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 .. 16384
		}),
		batchRTT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wsmesh_relay_batch_seconds",
			Help:    "Time from sending a batch to its ack.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14), // 100us .. 0.8s
		}),
		forward: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wsmesh_relay_forward_seconds",
			Help:    "Time of a /send's call to another node, by node called and result (ok, unreachable, timeout, queue_full, error).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}, []string{"node", "result"}),
		upPost: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wsmesh_upstream_post_seconds",
			Help:    "Time of a POST of events to the backend (upstream.url), by result: ok (2xx), refused (4xx), error (anything else, retried).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17), // 100us .. 6.5s
		}, []string{"result"}),
	}
}

// OnUpstreamPost is an upstream.Config.OnPost.
func (m *Metrics) OnUpstreamPost(took time.Duration, result string) {
	m.upPost.WithLabelValues(result).Observe(took.Seconds())
}

// OnBatch is a cluster.Config.OnBatch.
func (m *Metrics) OnBatch(items int, rtt time.Duration) {
	m.batchItems.Observe(float64(items))
	m.batchRTT.Observe(rtt.Seconds())
}

// OnForward is a relay.Config.OnForward. The node label takes the members'
// names: as many series as nodes the cluster has had.
func (m *Metrics) OnForward(node string, took time.Duration, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, cluster.ErrQueueFull):
		result = "queue_full"
	case errors.Is(err, cluster.ErrNoAnswer):
		result = "timeout"
	case errors.Is(err, cluster.ErrUnreachable), errors.Is(err, cluster.ErrUnknownNode), errors.Is(err, cluster.ErrClosed):
		result = "unreachable"
	default:
		result = "error"
	}
	m.forward.WithLabelValues(node, result).Observe(took.Seconds())
}

// Register adds every metric, reading src at scrape time.
func (m *Metrics) Register(src Sources) {
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.batchItems, m.batchRTT, m.forward,
		gauge("wsmesh_sessions", "Live client sessions on this node.", func() float64 { return float64(src.Hub.Len()) }),
		counter("wsmesh_connections_total", "WebSocket upgrades completed, refused tokens included.", func() uint64 { return src.Hub.Stats().Upgrades }),
		counter("wsmesh_connections_refused_total", "WebSocket upgrades refused with 503: session.max_connections reached.", func() uint64 { return src.Hub.Stats().Refused }),
		gauge("wsmesh_connections_limit", "session.max_connections in force: the most WebSockets this node holds.", func() float64 { return float64(src.Hub.MaxConnections()) }),
		counter("wsmesh_client_frames_total", "Frames read from clients: messages, pings and pongs.", func() uint64 { return src.Hub.Stats().ClientFrames }),
		counter("wsmesh_auth_failures_total", "Connections closed with 4001 (bad, missing or expired token).", func() uint64 { return src.Hub.Stats().AuthFailures }),
		counter("wsmesh_sessions_closed_total", "Sessions ended, for any reason.", func() uint64 { return src.Hub.Stats().Closed }),
		counter("wsmesh_evictions_total", "Sessions closed with 4000: a newer login of the same user and device.", func() uint64 { return src.Hub.Stats().Evictions }),
		counter("wsmesh_send_queue_overflows_total", "Sessions closed with 4002: their send queue overflowed.", func() uint64 { return src.Hub.Stats().SlowConsumers }),
		counter("wsmesh_token_expiries_total", "Sessions closed with 4001 \"token expired\": the token's exp (plus 5 s) passed without a refresh.", func() uint64 { return src.Hub.Stats().Expired }),
		counter("wsmesh_token_refreshes_total", "In-band token refreshes taken.", func() uint64 { return src.Hub.Stats().Refreshes }),
		counter("wsmesh_token_refresh_failures_total", "In-band token refreshes refused (an error frame; the session unchanged).", func() uint64 { return src.Hub.Stats().RefreshFailed }),
		counter("wsmesh_disconnects_total", "Sessions closed with 4003 by POST /disconnect.", func() uint64 { return src.Hub.Stats().Kicked }),
		counter("wsmesh_rate_limited_total", "Sessions closed with 4008: over session.max_client_rate.", func() uint64 { return src.Hub.Stats().TooMany }),
		counter("wsmesh_presence_total", "POST /presence calls answered 200.", func() uint64 { return src.API.Stats().Presence }),
		counter("wsmesh_client_messages_total", "Client {\"type\":\"message\"} frames handed to the backend's queue.", func() uint64 { return src.Hub.Stats().Messages }),
		counter("wsmesh_client_messages_refused_total", "Client messages answered with an error frame: bad data, no backend, or its queue full.", func() uint64 { return src.Hub.Stats().MessagesRefused }),
		counter("wsmesh_publishes_total", "POST /publish calls answered 200.", func() uint64 { return src.API.Stats().Publishes }),
		counter("wsmesh_broadcasts_total", "POST /broadcast calls answered 200.", func() uint64 { return src.API.Stats().Broadcasts }),
		counter("wsmesh_fanout_items_received_total", "Publish and broadcast relay items this node received from other nodes: one per publish that has members here.", func() uint64 { return src.API.Stats().FanoutItems }),
		counter("wsmesh_sends_total", "POST /send calls answered 200.", func() uint64 { return src.API.Stats().Sends }),
		counter("wsmesh_deliveries_total", `/send results "delivered": queued on a connection by its node.`, func() uint64 { return src.API.Stats().Delivered }),
		counter("wsmesh_offline_total", `/send results "offline": users with no live session in this node's table.`, func() uint64 { return src.API.Stats().Offline }),
		counter("wsmesh_unreachable_total", `/send results "unreachable": users whose owner node could not be asked or did not answer in time.`, func() uint64 { return src.API.Stats().Unreachable }),
		counter("wsmesh_send_errors_total", `/send results "error": a session or link could not take the message.`, func() uint64 { return src.API.Stats().Failed }),
		&linkCollector{c: src.Cluster},
		counter("wsmesh_relay_unauthenticated_total", "Link messages dropped because their MAC was missing or wrong (nodes must share auth.jwt_secret).", func() uint64 { return src.Cluster.Stats().Unauthenticated }),
		counter("wsmesh_relay_identity_refused_total", "Link messages refused: their sender's name and boot epoch are not the member memberlist knows (another process with a live node's node.name).", func() uint64 { return src.Cluster.Stats().IdentityRefused }),
		counter("wsmesh_relay_duplicates_total", "Copies of a batch received again (its ack lost or late): acked again, not handled twice.", func() uint64 { return src.Cluster.Stats().Duplicates }),
		counter("wsmesh_table_snapshots_sent_total", "Snapshots of this node's sessions started to a peer.", func() uint64 { return src.Cluster.Stats().SnapshotsSent }),
		counter("wsmesh_table_snapshots_resent_total", "Snapshots started to a peer before the previous one was acknowledged to its last chunk (should stay 0).", func() uint64 { return src.Cluster.Stats().SnapshotsResent }),
		counter("wsmesh_table_snapshot_chunks_total", "Snapshot chunks sent (at most 512 KiB each).", func() uint64 { return src.Cluster.Stats().SnapshotChunks }),
		counter("wsmesh_table_snapshots_applied_total", "Peers' snapshots applied to their last chunk.", func() uint64 { return src.Cluster.Stats().SnapshotsApplied }),
		counter("wsmesh_table_snapshots_abandoned_total", "Peers' snapshots left unfinished (a chunk missing, or a newer one started).", func() uint64 { return src.Cluster.Stats().SnapshotsAbandoned }),
		gauge("wsmesh_table_sessions", "Sessions in this node's cluster-wide table.", func() float64 { return float64(src.Cluster.TableSize()) }),
		&membersCollector{c: src.Cluster},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "wsmesh_build_info",
			Help:        "Always 1; the labels say which build runs: module version and VCS revision.",
			ConstLabels: prometheus.Labels{"version": src.Version, "revision": src.Revision},
		}, func() float64 { return 1 }),
	)
	if up := src.Upstream; up != nil {
		m.reg.MustRegister(m.upPost, &upstreamCollector{s: up})
	}
	if src.Ready != nil {
		m.reg.MustRegister(gauge("wsmesh_ready", "1 while GET /readyz answers 200 (joined, every alive member's sessions known, not shutting down), else 0.", func() float64 {
			if ok, _ := src.Ready(); ok {
				return 1
			}
			return 0
		}))
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// linkCollector reports each link's counters labelled by peer.
type linkCollector struct{ c *cluster.Cluster }

var linkDescs = []struct {
	desc  *prometheus.Desc
	value func(cluster.PeerStats) uint64
}{
	{prometheus.NewDesc("wsmesh_relay_batches_total", "Batches the peer acknowledged, by peer.", []string{"peer"}, nil),
		func(s cluster.PeerStats) uint64 { return s.Batches }},
	{prometheus.NewDesc("wsmesh_relay_send_failures_total", "Batches that could not be sent to the peer (unreachable), by peer.", []string{"peer"}, nil),
		func(s cluster.PeerStats) uint64 { return s.SendFailures }},
	{prometheus.NewDesc("wsmesh_relay_ack_timeouts_total", "Batches the peer did not acknowledge in time, by peer.", []string{"peer"}, nil),
		func(s cluster.PeerStats) uint64 { return s.AckTimeouts }},
	{prometheus.NewDesc("wsmesh_relay_queue_overflows_total", "Calls refused because the link's queue to the peer was full, by peer.", []string{"peer"}, nil),
		func(s cluster.PeerStats) uint64 { return s.QueueFull }},
	{prometheus.NewDesc("wsmesh_relay_retransmits_total", "Batches sent to the peer again (same sequence) after an ack timeout or a failed send, by peer.", []string{"peer"}, nil),
		func(s cluster.PeerStats) uint64 { return s.Retransmits }},
}

func (lc *linkCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range linkDescs {
		ch <- d.desc
	}
}

func (lc *linkCollector) Collect(ch chan<- prometheus.Metric) {
	for peer, s := range lc.c.PeerStats() {
		for _, d := range linkDescs {
			ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(d.value(s)), peer)
		}
	}
}

// membersCollector reports members by state, as GET /cluster lists them.
type membersCollector struct{ c *cluster.Cluster }

var membersDesc = prometheus.NewDesc("wsmesh_members", "Cluster members known to this node, by state (alive, suspect, dead, left).", []string{"state"}, nil)

func (mc *membersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- membersDesc }

func (mc *membersCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{cluster.StateAlive: 0, cluster.StateSuspect: 0, cluster.StateDead: 0, cluster.StateLeft: 0}
	for _, m := range mc.c.Members() {
		counts[m.State]++
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(n), state)
	}
}

// upstreamCollector reports the upstream sender's totals by label.
type upstreamCollector struct{ s *upstream.Sender }

var (
	upSentDesc    = prometheus.NewDesc("wsmesh_upstream_events_total", "Events the backend accepted, by type (message, connect, disconnect).", []string{"type"}, nil)
	upDroppedDesc = prometheus.NewDesc("wsmesh_upstream_dropped_total", "Events given up, by reason: queue_full (upstream.queue), refused (4xx), unreachable (upstream.retry_for passed), shutdown.", []string{"reason"}, nil)
	upRetryDesc   = prometheus.NewDesc("wsmesh_upstream_retries_total", "POSTs of events that failed and were tried again.", nil, nil)
	upDepthDesc   = prometheus.NewDesc("wsmesh_upstream_queue", "Events waiting to be sent to the backend.", nil, nil)
)

func (c *upstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- upSentDesc
	ch <- upDroppedDesc
	ch <- upRetryDesc
	ch <- upDepthDesc
}

func (c *upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	for t, n := range st.Sent {
		ch <- prometheus.MustNewConstMetric(upSentDesc, prometheus.CounterValue, float64(n), t)
	}
	for r, n := range st.Dropped {
		ch <- prometheus.MustNewConstMetric(upDroppedDesc, prometheus.CounterValue, float64(n), r)
	}
	ch <- prometheus.MustNewConstMetric(upRetryDesc, prometheus.CounterValue, float64(st.Retried))
	ch <- prometheus.MustNewConstMetric(upDepthDesc, prometheus.GaugeValue, float64(st.QueueDepth))
}
