// Package realip finds a request's client address behind trusted reverse
// proxies (nginx): X-Forwarded-For is believed only as far back as the
// chain of trusted proxies goes.
package realip

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies is a set of trusted proxy networks. The zero value trusts none.
type Proxies []netip.Prefix

// Parse reads IPs or CIDRs ("10.0.0.1", "10.0.0.0/8", "::1").
func Parse(list []string) (Proxies, error) {
	var out Proxies
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func (ps Proxies) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr returns r's client address: the connection's peer, unless that
// peer is a trusted proxy, in which case X-Forwarded-For (then X-Real-IP)
// is read from the right, skipping trusted proxies, and the first address
// that is not one is the client. With a port only when it is the peer's.
func (ps Proxies) ClientAddr(r *http.Request) string {
	peer := r.RemoteAddr
	if len(ps) == 0 {
		return peer
	}
	ap, err := netip.ParseAddrPort(peer)
	if err != nil || !ps.trusted(ap.Addr()) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if h == "" {
			continue
		}
		a, err := netip.ParseAddr(h)
		if err != nil {
			break // garbage: trust nothing further left
		}
		if !ps.trusted(a) {
			return a.Unmap().String()
		}
	}
	if xr := strings.TrimSpace(r.Header.Get("X-Real-IP")); xr != "" {
		if a, err := netip.ParseAddr(xr); err == nil {
			return a.Unmap().String()
		}
	}
	if host, _, err := net.SplitHostPort(peer); err == nil {
		return host
	}
	return peer
}
