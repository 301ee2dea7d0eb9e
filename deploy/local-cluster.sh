#!/usr/bin/env bash
# Runs a three-node wsmesh cluster on this machine, on loopback, from the
# repo's config.toml with per-node overrides:
#   n1  http 127.0.0.1:8081  gossip 127.0.0.1:7947  (the seed)
#   n2  http 127.0.0.1:8082  gossip 127.0.0.1:7948
#   n3  http 127.0.0.1:8083  gossip 127.0.0.1:7949
# HTTP_BASE and GOSSIP_BASE move the ports: node i gets HTTP_BASE+i and
# GOSSIP_BASE+i (defaults 8080 and 7946), e.g.
#   HTTP_BASE=9000 GOSSIP_BASE=9100 deploy/local-cluster.sh   # 9001-9003, 9101-9103
# Ctrl-C (or SIGTERM) stops all three gracefully.
set -euo pipefail
http_base=${HTTP_BASE:-8080}
gossip_base=${GOSSIP_BASE:-7946}
case "$http_base$gossip_base" in *[!0-9]*) echo "HTTP_BASE and GOSSIP_BASE must be port numbers" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/wsmesh
go build -o "$bin" .

pids=()
stop() {
	kill -TERM "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
	rm -rf "$(dirname "$bin")"
}
trap stop EXIT INT TERM

for i in 1 2 3; do
	seeds=""
	[ "$i" -gt 1 ] && seeds=127.0.0.1:$((gossip_base + 1))
	WSMESH_NODE_NAME=n$i \
		WSMESH_HTTP_LISTEN=127.0.0.1:$((http_base + i)) \
		WSMESH_CLUSTER_BIND=127.0.0.1:$((gossip_base + i)) \
		WSMESH_CLUSTER_SEEDS=$seeds \
		"$bin" serve -config config.toml &
	pids+=($!)
done
# Wait until each node is ready (GET /readyz: joined, every member's sessions known).
for i in 1 2 3; do
	for _ in $(seq 100); do
		curl -fsS -o /dev/null "http://127.0.0.1:$((http_base + i))/readyz" 2>/dev/null && break
		sleep 0.1
	done
	echo "n$i /readyz: $(curl -sS "http://127.0.0.1:$((http_base + i))/readyz" || true)" >&2
done
echo "three nodes: http 127.0.0.1:$((http_base + 1)) $((http_base + 2)) $((http_base + 3)); Ctrl-C stops them" >&2
wait
