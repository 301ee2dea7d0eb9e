package session

import (
	"net"
	"sync"
	"testing"
)

// countingConn counts the writes that reach it and keeps their bytes.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	data   []byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	c.data = append(c.data, p...)
	return len(p), nil
}

func (c *countingConn) Close() error { return nil }

// TestCorkConn: writes while corked reach the connection as one write, in
// order, at uncork; writes while not corked go straight through; Close
// sends what is held first.
func TestCorkConn(t *testing.T) {
	under := &countingConn{}
	c := &corkConn{Conn: under}
	_, _ = c.Write([]byte("a"))
	c.cork()
	for _, p := range []string{"b", "cc", "ddd"} {
		_, _ = c.Write([]byte(p))
	}
	if under.writes != 1 {
		t.Fatalf("%d writes before uncork, want 1 (the uncorked one)", under.writes)
	}
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("e"))
	if under.writes != 3 || string(under.data) != "abccddde" {
		t.Fatalf("%d writes of %q, want 3 writes of \"abccddde\"", under.writes, under.data)
	}
	if err := c.uncork(); err != nil { // not corked: nothing
		t.Fatal(err)
	}
	c.cork()
	_, _ = c.Write([]byte("f"))
	_ = c.Close()
	if under.writes != 4 || string(under.data) != "abccdddef" {
		t.Fatalf("Close sent %q in %d writes", under.data, under.writes)
	}
}
