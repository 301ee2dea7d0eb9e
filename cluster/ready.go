package cluster

import (
	"fmt"
	"slices"
	"strings"
)

// Readiness says whether this node is ready for traffic, as GET /readyz
// reports it, and if not, why (one reason per line, e.g. "no session table
// from n2 yet"). It is ready when
//
//   - it runs alone by config (no seeds other than its own address), or it
//     has joined: it has, or had, another member (a seed answered, or
//     someone joined it; members lost since still count, for an hour, so
//     the last node standing stays ready while it re-joins);
//   - and for every member gossip reports alive whose link works, its
//     table holds that member's sessions from the member's current run: a
//     snapshot from it (with the boot epoch in its meta) was applied.
//
// A member whose link fails (suspect in GET /cluster: crashed, stopped,
// partitioned) does not make the node unready: its sessions cannot be
// reached anyway, and /send answers its users "unreachable" from the copy
// taken before. Before Start and after Leave the node is not ready.
//
// It does not block; it takes Cluster.mu, each peer.mu and table.mu (read)
// one at a time, never two at once. Safe to call concurrently, any time.
func (c *Cluster) Readiness() (ready bool, reasons []string) {
	if c.ml == nil {
		return false, []string{"cluster not started"}
	}
	if c.ctx.Err() != nil {
		return false, []string{"left the cluster"}
	}
	seeds := slices.DeleteFunc(slices.Clone(c.cfg.Seeds), func(s string) bool { return s == c.selfAddr })

	c.mu.Lock()
	joined := len(seeds) == 0 || len(c.peers) > 0 || len(c.lost) > 0
	peers := make([]*peer, 0, len(c.peers))
	for _, p := range c.peers {
		peers = append(peers, p)
	}
	c.mu.Unlock()
	if !joined {
		reasons = append(reasons, fmt.Sprintf("not joined: no seed answered yet (cluster.seeds %v)", seeds))
	}

	type want struct {
		name  string
		epoch uint64
	}
	var wants []want
	for _, p := range peers {
		p.mu.Lock()
		w, failing := want{p.name, p.epoch}, p.failing
		p.mu.Unlock()
		if !failing {
			wants = append(wants, w)
		}
	}
	slices.SortFunc(wants, func(a, b want) int { return strings.Compare(a.name, b.name) })
	c.table.mu.RLock()
	for _, w := range wants {
		if !c.table.hasRunLocked(w.name, w.epoch) {
			reasons = append(reasons, "no session table from "+w.name+" yet")
		}
	}
	c.table.mu.RUnlock()
	return len(reasons) == 0, reasons
}

// hasRunLocked reports whether the table holds node name's sessions from
// its run with that boot epoch (0: any run): a snapshot of it was applied.
// t.mu must be held (read).
func (t *table) hasRunLocked(name string, epoch uint64) bool {
	o := t.origins[name]
	return o != nil && o.epoch != 0 && (epoch == 0 || o.epoch == epoch)
}
