package realip

import (
	"net/http"
	"testing"
)

func TestClientAddr(t *testing.T) {
	ps, err := Parse([]string{"127.0.0.1", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, peer, xff, xri, want string
		proxies                    Proxies
	}{
		{"no proxies configured", "127.0.0.1:5000", "1.2.3.4", "", "127.0.0.1:5000", nil},
		{"untrusted peer ignores headers", "8.8.8.8:5000", "1.2.3.4", "5.6.7.8", "8.8.8.8:5000", ps},
		{"trusted peer, one hop", "127.0.0.1:5000", "1.2.3.4", "", "1.2.3.4", ps},
		{"spoofed left entries skipped", "127.0.0.1:5000", "6.6.6.6, 1.2.3.4", "", "1.2.3.4", ps},
		{"chain of trusted proxies", "127.0.0.1:5000", "1.2.3.4, 10.1.1.1", "", "1.2.3.4", ps},
		{"x-real-ip fallback", "127.0.0.1:5000", "", "9.9.9.9", "9.9.9.9", ps},
		{"garbage stops the walk", "127.0.0.1:5000", "1.2.3.4, nonsense", "", "127.0.0.1", ps},
		{"ipv6 client", "127.0.0.1:5000", "2001:db8::1", "", "2001:db8::1", ps},
		{"all trusted: the peer", "127.0.0.1:5000", "10.0.0.2", "", "127.0.0.1", ps},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			if tc.xri != "" {
				r.Header.Set("X-Real-IP", tc.xri)
			}
			if got := tc.proxies.ClientAddr(r); got != tc.want {
				t.Fatalf("ClientAddr = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse([]string{"10.0.0.0/8", "proxy.local"}); err == nil {
		t.Fatal("a host name must be refused")
	}
}
