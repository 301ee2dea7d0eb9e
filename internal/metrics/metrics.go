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
)

// Sources are what the metrics read, on every scrape.
type Sources struct {
	Hub     *session.Hub
	Cluster *cluster.Cluster
	API     *relay.Server
}

// Metrics is one node's registry and histograms.
type Metrics struct {
	reg        *prometheus.Registry
	batchItems prometheus.Histogram
	batchRTT   prometheus.Histogram
	forward    *prometheus.HistogramVec
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
			Help:    "Time of a /send's call to another node, by result (ok, unreachable, timeout, queue_full, error).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}, []string{"result"}),
	}
}

// OnBatch is a cluster.Config.OnBatch.
func (m *Metrics) OnBatch(items int, rtt time.Duration) {
	m.batchItems.Observe(float64(items))
	m.batchRTT.Observe(rtt.Seconds())
}

// OnForward is a relay.Config.OnForward.
func (m *Metrics) OnForward(_ string, took time.Duration, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, cluster.ErrQueueFull):
		result = "queue_full"
	case errors.Is(err, cluster.ErrNoAnswer):
		result = "timeout"
	case errors.Is(err, cluster.ErrUnreachable), errors.Is(err, cluster.ErrUnknownNode):
		result = "unreachable"
	default:
		result = "error"
	}
	m.forward.WithLabelValues(result).Observe(took.Seconds())
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
		counter("wsmesh_sends_total", "POST /send calls answered 200.", func() uint64 { return src.API.Stats().Sends }),
		counter("wsmesh_deliveries_total", `/send results "delivered": queued on a connection by its node.`, func() uint64 { return src.API.Stats().Delivered }),
		counter("wsmesh_offline_total", `/send results "offline": users with no live session (or an unreachable owner).`, func() uint64 { return src.API.Stats().Offline }),
		counter("wsmesh_send_errors_total", `/send results "error": a session or link could not take the message.`, func() uint64 { return src.API.Stats().Failed }),
		counter("wsmesh_relay_batches_total", "Batches links had acknowledged.", func() uint64 { return src.Cluster.Stats().Batches }),
		counter("wsmesh_relay_send_failures_total", "Batches that could not be sent: the peer was unreachable.", func() uint64 { return src.Cluster.Stats().SendFailures }),
		counter("wsmesh_relay_ack_timeouts_total", "Batches sent but not acknowledged in time.", func() uint64 { return src.Cluster.Stats().AckTimeouts }),
		counter("wsmesh_relay_unauthenticated_total", "Link messages dropped because their MAC was missing or wrong (nodes must share auth.jwt_secret).", func() uint64 { return src.Cluster.Stats().Unauthenticated }),
		counter("wsmesh_relay_queue_overflows_total", "Calls refused because a link's queue was full.", func() uint64 { return src.Cluster.Stats().QueueFull }),
		gauge("wsmesh_table_sessions", "Sessions in this node's cluster-wide table.", func() float64 { return float64(src.Cluster.TableSize()) }),
		&membersCollector{c: src.Cluster},
	)
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
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
