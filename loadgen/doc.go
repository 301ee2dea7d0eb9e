// Package loadgen is `wsmesh bench`: a load generator that measures a wsmesh
// cluster end to end, in the manner of `nats bench`.
//
// It either starts the nodes itself (-spawn N: this same binary, `serve`,
// on 127.0.0.1 with free ports and generated secrets, in one gossip cluster
// seeded by the first) or uses running ones (-nodes, with -config for their
// jwt_secret and api key). It opens -clients WebSocket clients spread over
// the nodes (or -clients-on some), in worker processes it starts by running
// itself again as `bench -worker` (a process may hold no more sockets than
// its open files limit allows: ceil(clients/15000) workers by default, for a
// limit of 20,000), then calls POST /send on
// -send-to nodes, -recipients users per call, at -rate calls per second or
// as fast as -senders concurrent calls go, until -messages or -duration.
// With -room NAME it tests rooms instead: every client joins room NAME,
// and -publishers concurrent calls of POST /publish into it do what the
// /send calls would (see "Rooms" below). It
// ends everything it started: on completion, Ctrl-C or SIGTERM, the workers
// close their connections (close 1000) and exit, and the nodes get SIGTERM
// (SIGKILL after 15 s); should bench itself die, the kernel kills the
// workers and sends the nodes SIGTERM (Pdeathsig).
//
// # Examples
//
//	wsmesh bench -spawn 1 -clients 15000 -idle -duration 20s
//	wsmesh bench -spawn 2 -clients 1000 -clients-on 2 -send-to 1 -recipients 100 -duration 20s
//	wsmesh bench -spawn 3 -clients 1000 -recipients 1 -messages 100000 -senders 16
//	wsmesh bench -nodes http://127.0.0.1:8081,http://127.0.0.1:8082 -config config.toml -rate 1000 -recipients 10
//	wsmesh bench -spawn 3 -clients 10000 -room r -publishers 4 -duration 10s
//	wsmesh bench -spawn 3 -clients 10000 -room r -rate 100 -duration 10s -join-probes 0
//	wsmesh bench -spawn 3 -clients 10000 -recipients 10000 -senders 4 -duration 10s
//
// The last is the /send to the same 10k users that the first publishes to:
// spawned nodes take -recipients users per call (their
// http.max_users_per_send is raised to it when it is over 1000).
//
// # How a message is measured
//
// Message number seq (0, 1, 2, ...) goes to users u(seq*K mod U) to
// u(seq*K+K-1 mod U), and its data is {"t":<unix ns>,"s":<seq>,"p":"xx.."},
// padded to -payload bytes. t is taken just before the POST /send call
// starts. A client that receives the frame takes the time again: latency is
// receive time minus t, on the same machine's clock. It therefore covers
// the whole path: the HTTP call, routing, the relay to the owning node when
// the client is elsewhere, the session's send queue, the WebSocket write
// and the client's read. With -rate, t is when the call was actually made;
// if the senders fall behind the schedule, the shortfall shows as a lower
// sends rate, not as latency.
//
// # Rooms
//
// With -room NAME, each client's token carries a rooms claim allowing NAME,
// and once every node's table lists every session, each client sends
// {"type":"join","room":NAME} (paced at -connect-rate, all workers
// together). Bench then waits until every node's GET /rooms/NAME counts
// every client, runs the join probes (below), and calls POST /publish
// {"room":NAME,"data":...} on the -send-to nodes, round robin, at -rate
// calls per second or as fast as -publishers concurrent calls go, until
// -messages or -duration. The data is /send's, sequence number and send
// time included, so everything above holds per member: a publish's
// "delivered" (summed over the nodes) is what its members should receive.
//
// Publish → last member: per publish, the latest receipt at any member
// minus the send time (each worker keeps, per sequence number, the largest
// latency it saw; bench takes the largest over the workers); percentiles
// over publishes. A publish some member never received is left out and
// counted as incomplete. With N members it is the slowest of N
// deliveries, so it is at least the members' p(1-1/N) latency: for a
// large room, the time until the whole room has the message.
//
// Join → first publish from another node (join probes): a client that
// joins a room in which its node already has members is reached by the
// next publish from anywhere, since every node already sends that room's
// publishes to its node. The slow case is a node's first member: the
// publishing node learns of it only when the member's node announces its
// new count (the cluster's interest table). Each probe measures that case
// on a room of its own, NAME~probe-<tag>-<k>, with no member anywhere:
// a fresh client on node A (the clients' nodes in turn) gets its welcome,
// sends its join frame (time J), and at once a probe publisher calls POST
// /publish into the probe room on another node B (a -send-to node if
// there is one) again and again, each call answered before the next, until
// one reports a delivery. The sample is the time the client receives its
// first message in the room minus J: the join on A, A's announcement to
// B, and the first publish B makes once it knows, relayed to A and
// written to the client. It reads high by at most one /publish call (the
// wait for the next one). Probes run one at a time, in the bench process,
// after the clients have joined and before the publishing starts (so on a
// cluster holding the clients, without the publish load). -join-probes 0
// skips them; they need two nodes.
//
// # Reading the summary
//
// connections: opened is handshakes completed, failed is dials or
// handshakes that failed, dropped is connections the nodes (or the network)
// closed before the end, by close code (4002: a send queue overflowed, the
// client read too slowly; 1012: a node shut down). connect_rate is opened
// over the time from the first dial to the last handshake, at most
// -connect-rate; registered_s is when every node's session table listed
// every session (sends wait for it, or a user could be reported offline).
//
// sends: ok calls answered 200, http_errors other answers (by_status),
// transport_errors calls with no readable answer. rate is ok calls per
// second from the first call to the last answer. Its latency is the /send
// call's own duration, which includes the relay to other nodes: /send
// answers once every owner node has said what it did.
//
// results: the /send answers' per-session results added up. delivered means
// the owner node queued the frame for that connection; offline, that the
// user had no session (more -users than -clients, or a dropped client);
// error, that the session could not take it (e.g. its queue was full);
// unreachable (shown when not 0), that the owner node did not answer
// within the cluster's call timeout: the message may still have reached
// the client, and then counts as extra below.
//
// messages: expected is the results delivered, received the frames the
// clients got. They are compared per message: missing counts frames
// reported delivered but never received (missing_seqs lists the first),
// extra frames received beyond what was reported (say, a call whose answer
// was lost but whose message went out). missing should be 0; nonzero is a
// lost message, or a client dropped with frames still queued. rate is
// received over the time from the first call to the last frame received:
// delivered messages per second, the throughput at the clients; with K
// recipients it is about K times the sends rate.
//
// latency: percentiles of every received message's latency, from a
// log-bucketed histogram (HdrHistogram-like: 128 buckets per power of two)
// merged across workers. Each percentile is the top of its bucket, so it
// reads at most 0.8% high and never low; min, mean and max are exact. On
// one machine the load generator competes with the nodes for the CPU:
// latency and rates measure the pair, and an overloaded machine shows up
// first as a high p99.
//
// With -room: publishes replaces sends (the POST /publish calls, the same
// fields); results has delivered, the /publish answers' "delivered" added
// up, and unreachable, the nodes they named unreachable (a node that did
// not answer within the call timeout: its members may still have had the
// message, counted as extra). room: members is what the nodes' GET
// /rooms/NAME counted (the smallest of them) once all had joined, after
// joined_s from the first join frame; joined and join_errors count the
// joined frames and the refused (or unsent) joins; join_latency is join
// frame sent → joined frame received, per client, while the others join;
// last_member_latency and last_member_incomplete as above; join_probes:
// probes, ok, timed_out (no message within 5 s), failed, first_publish
// (join → first publish from another node), joined (join → joined, for
// the probe's client) and publish_calls_mean (calls until one reached the
// client: about the announcement's delay over one call's duration). Per
// node: room_members, its own count; fanout_items_received, the growth of
// its wsmesh_fanout_items_received_total from just before the first
// publish to after the last message was received, and
// publishes_via_other_nodes, the publishes answered 200 that entered
// through other nodes: a node with members should receive exactly one
// relay item per such publish (its own publishes it delivers without
// one), a node without members none.
//
// nodes: each node's resident memory (VmRSS from /proc for spawned nodes,
// process_resident_memory_bytes from GET /metrics for others) before any
// client connected, once all had, and at the end, before the clients
// disconnected; sessions is the node's own sessions. With -idle,
// rss_per_conn_bytes is (after - before) / sessions, per node and for all
// nodes together: the memory one idle connection costs a node, including
// its share of the Go heap's slack (compare runs of different sizes).
// workers: the client processes, their clients and RSS.
//
// The progress line (on a terminal only, rewritten every second) shows
// connections, sends (or publishes) made, messages received, messages per second and p99
// latency over the last second.
//
// Exit code 0 means the run completed, whatever it measured: read missing,
// dropped and the errors in the summary (warnings repeats them). 1: it
// could not run, or was interrupted (the summary so far is still printed).
// 2: a usage error.
package loadgen
