package cluster

import "hash/fnv"

// When gossip declares a member dead, its sessions vanish from every
// table, and nobody told the backend they ended: the member could not.
// One survivor, the member's heir, reports them (Config.OnNodeFailed).

// heirLocked returns the node that reports the sessions of failed, a
// member just declared dead: of this node and its live peers, the one
// whose name hashes highest with failed's (rendezvous hashing). Every
// node that sees the same members picks the same heir, with no message
// exchanged; a node whose view differs for a moment may pick another,
// which then reports them too (event ids let a backend drop the
// repeats). c.mu must be held.
func (c *Cluster) heirLocked(failed string) string {
	best, bestScore := c.cfg.NodeName, heirScore(failed, c.cfg.NodeName)
	for name := range c.peers {
		if name == failed {
			continue
		}
		if s := heirScore(failed, name); s > bestScore || (s == bestScore && name < best) {
			best, bestScore = name, s
		}
	}
	return best
}

func heirScore(failed, node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(failed))
	h.Write([]byte{0})
	h.Write([]byte(node))
	return h.Sum64()
}

// sessionsOfLocked returns origin name's sessions; table.mu must be held.
func (t *table) sessionsOfLocked(name string) []Located {
	o := t.origins[name]
	if o == nil {
		return nil
	}
	out := make([]Located, 0, len(o.sessions)+len(o.stale))
	for _, e := range o.sessions {
		out = append(out, e.located())
	}
	for _, e := range o.stale {
		out = append(out, e.located())
	}
	return out
}
