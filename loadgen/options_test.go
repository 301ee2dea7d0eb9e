package loadgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"wsmesh/session"
)

func TestParseArgsErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string // substring of the error
	}{
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"-clients", "0"}, "-clients 0: want 1 to 1000000"},
		{[]string{"-clients", "x"}, `invalid value "x" for flag -clients`},
		{[]string{"-users", "0"}, "-users 0: want 1"},
		{[]string{"-spawn", "-1"}, "-spawn -1: want 1 to 32"},
		{[]string{"-spawn", "2", "-nodes", "127.0.0.1:1"}, "-spawn and -nodes exclude each other"},
		{[]string{"-spawn", "2", "-config", "x.toml"}, "-spawn and -config exclude each other"},
		{[]string{"-keep"}, "-keep applies only with -spawn"},
		{[]string{"-nodes", "https://127.0.0.1:8081"}, "only http:// nodes"},
		{[]string{"-nodes", "127.0.0.1"}, `"127.0.0.1": want http://host:port`},
		{[]string{"-nodes", "http://127.0.0.1:8081/send"}, "without a path"},
		{[]string{"-nodes", "127.0.0.1:0"}, "invalid port"},
		{[]string{"-spawn", "2", "-clients-on", "3"}, "-clients-on 3: node 3 does not exist (nodes are numbered 1 to 2)"},
		{[]string{"-spawn", "2", "-send-to", "0"}, "-send-to 0: node 0 does not exist"},
		{[]string{"-nodes", "127.0.0.1:8081", "-send-to", "127.0.0.1:9"}, "127.0.0.1:9 is not one of -nodes"},
		{[]string{"-spawn", "2", "-send-to", "first"}, `"first" is neither a node number`},
		{[]string{"-recipients", "0"}, "-recipients 0: want 1 to -users (100)"},
		{[]string{"-users", "5", "-recipients", "6"}, "-recipients 6: want 1 to -users (5)"},
		{[]string{"-publishers", "4"}, "-publishers applies only with -room"},
		{[]string{"-join-probes", "4"}, "-join-probes applies only with -room"},
		{[]string{"-room", "has space"}, `-room "has space": bad room name`},
		{[]string{"-room", strings.Repeat("r", 190)}, "-room: at most"},
		{[]string{"-room", "r", "-recipients", "5"}, "-recipients does not apply with -room"},
		{[]string{"-room", "r", "-senders", "5"}, "-senders does not apply with -room"},
		{[]string{"-room", "r", "-publishers", "0"}, "-publishers 0: want 1 to 1024"},
		{[]string{"-room", "r", "-join-probes", "-1"}, "-join-probes -1: want 0 to 10000"},
		{[]string{"-room", "r", "-idle"}, "-room does not apply with -idle"},
		{[]string{"-rate", "-1"}, "-rate -1"},
		{[]string{"-senders", "0"}, "-senders 0: want 1 to 1024"},
		{[]string{"-duration", "0s"}, "-duration 0s: want more than 0"},
		{[]string{"-duration", "48h"}, "at most 24h0m0s"},
		{[]string{"-messages", "-5"}, "-messages -5"},
		{[]string{"-messages", "20000000"}, "want 1 to 10000000"},
		{[]string{"-payload", "-1"}, "-payload -1"},
		{[]string{"-connect-rate", "0"}, "-connect-rate 0"},
		{[]string{"-idle", "-rate", "10"}, "-rate does not apply with -idle"},
		{[]string{"-idle", "-messages", "10"}, "-messages does not apply with -idle"},
		{[]string{"-idle", "-send-to", "1"}, "-send-to does not apply with -idle"},
		{[]string{"-source-ips", "127.0.0.9-127.0.0.2"}, "the end is below the start"},
		{[]string{"-source-ips", "localhost"}, `"localhost" is not an IPv4 address`},
		{[]string{"-source-ips", "0.0.0.0"}, "not a usable source address"},
		{[]string{"-workers", "-2"}, "-workers -2"},
		{[]string{"-clients", "10", "-workers", "11"}, "-workers 11 is more than -clients 10"},
	}
	for _, tc := range cases {
		_, err := ParseArgs(tc.args)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestParseArgsLimits(t *testing.T) {
	per := maxClientsPerProcess()
	if per > maxClients {
		t.Skipf("open files limit %d: no per-process cap to test", per+fdReserve)
	}
	_, err := ParseArgs([]string{"-clients", strconv.Itoa(per + 1), "-workers", "1"})
	if err == nil || !strings.Contains(err.Error(), "a process may hold about") {
		t.Errorf("too many clients in one worker: %v", err)
	}
	_, err = ParseArgs([]string{"-clients", strconv.Itoa(per + 1), "-workers", "0"})
	if err == nil || !strings.Contains(err.Error(), "-workers 0 runs every client in this process") {
		t.Errorf("too many clients in-process: %v", err)
	}
	_, err = ParseArgs([]string{"-spawn", "1", "-clients", strconv.Itoa(per + 1), "-workers", "4"})
	if err == nil || !strings.Contains(err.Error(), "connections per spawned node") {
		t.Errorf("too many clients on one spawned node: %v", err)
	}
	if ports := ephemeralPorts(); ports > 0 && 2*ports < maxClients {
		_, err = ParseArgs([]string{"-nodes", "127.0.0.1:8081", "-clients", strconv.Itoa(2*ports + 1), "-workers", "100"})
		if err == nil || !strings.Contains(err.Error(), "add -source-ips") {
			t.Errorf("more connections than ports: %v", err)
		}
		if _, err := ParseArgs([]string{"-nodes", "127.0.0.1:8081", "-clients", strconv.Itoa(2*ports + 1), "-workers", "100", "-source-ips", "127.0.0.2-127.0.0.4"}); err != nil {
			t.Errorf("with three source addresses: %v", err)
		}
	}
}

func TestParseArgsDefaults(t *testing.T) {
	o, err := ParseArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.Clients != 100 || o.Users != 100 || o.Recipients != 1 || o.Senders != 8 || o.Duration != 30*time.Second ||
		o.Payload != 128 || o.Workers != 1 || o.ConnectRate != 5000 || o.Rate != 0 || o.Messages != 0 ||
		!slices.Equal(o.ClientsOn, []int{0}) || !slices.Equal(o.SendTo, []int{0}) {
		t.Fatalf("defaults: %+v", o)
	}
	o, err = ParseArgs([]string{"-clients", "45000", "-source-ips", "127.0.0.2-127.0.0.3"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Workers != 3 {
		t.Fatalf("45000 clients: %d workers, want ceil(45000/15000) = 3", o.Workers)
	}
	o, err = ParseArgs([]string{"-spawn", "3", "-clients-on", "2,3,2", "-users", "10", "-clients", "30",
		"-source-ips", "127.0.0.2-127.0.0.4,127.0.0.9", "-idle"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4"), netip.MustParseAddr("127.0.0.9")}
	if !slices.Equal(o.ClientsOn, []int{1, 2}) || o.SendTo != nil || !slices.Equal(o.SourceIPs, want) || o.Users != 10 {
		t.Fatalf("%+v", o)
	}
	_, err = ParseArgs([]string{"-idle", "-send-to", "1"})
	if err == nil {
		t.Fatal("-idle with -send-to accepted")
	}
	o, err = ParseArgs([]string{"-spawn", "2", "-clients", "2000", "-recipients", "2000"}) // the spawned nodes take 2000 per /send
	if err != nil || o.Recipients != 2000 {
		t.Fatalf("-recipients 2000 with -spawn: %v", err)
	}
	o, err = ParseArgs([]string{"-spawn", "2", "-room", "live:1", "-publishers", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Room != "live:1" || o.Publishers != 3 || o.Senders != 3 || o.JoinProbes != 100 || o.Recipients != 0 {
		t.Fatalf("-room: %+v", o)
	}
	if o, err = ParseArgs([]string{"-room", "r"}); err != nil || o.Publishers != 8 {
		t.Fatalf("-room defaults: %+v, %v", o, err)
	}
	o, err = ParseArgs([]string{"-nodes", "http://127.0.0.1:8081,127.0.0.1:8082", "-clients-on", "http://127.0.0.1:8082", "-send-to", "1"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Nodes, []string{"127.0.0.1:8081", "127.0.0.1:8082"}) || !slices.Equal(o.ClientsOn, []int{1}) || !slices.Equal(o.SendTo, []int{0}) {
		t.Fatalf("%+v", o)
	}
}

// TestMainUsage checks exit codes and where usage goes.
func TestMainUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"-h"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "Usage: wsmesh bench") || errb.Len() != 0 {
		t.Fatalf("-h: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := Main([]string{"-clients", "0"}, &out, &errb); code != 2 || out.Len() != 0 ||
		!strings.HasPrefix(errb.String(), "wsmesh bench: -clients 0: want 1 to 1000000\n") || !strings.Contains(errb.String(), "Usage: wsmesh bench") {
		t.Fatalf("-clients 0: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	errb.Reset()
	if code := Main([]string{"-worker", "x"}, &out, &errb); code != 2 {
		t.Fatalf("-worker x: exit %d: %s", code, errb.String())
	}
	// No config with a jwt_secret: it cannot mint tokens, exit 1.
	t.Chdir(t.TempDir())
	t.Setenv("WSMESH_AUTH_JWT_SECRET", "") // empty: none configured
	errb.Reset()
	if code := Main([]string{"-clients", "1", "-duration", "1s"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no auth.jwt_secret configured") {
		t.Fatalf("without a config: exit %d: %s", code, errb.String())
	}
}

func TestFrameFormat(t *testing.T) {
	s := newSender([]string{"127.0.0.1:1"}, "", 10, 3, 200, 1)
	for _, payload := range []int{0, 10, 200, 1000} {
		s.payload, s.pad = payload, strings.Repeat("x", payload)
		data := s.data(nil, 123456, 1_700_000_000_123_456_789)
		if !json.Valid(data) {
			t.Fatalf("payload %d: data not JSON: %s", payload, data)
		}
		if payload >= 60 && len(data) != payload {
			t.Errorf("payload %d: data is %d bytes: %s", payload, len(data), data)
		}
		// What the node makes of it, and what the client reads back.
		frame := session.MessageFrame("01a2062b-1f19-7000-b891-1edb6a36ddbf", data)
		sent, seq, ok, isMsg := parseFrame(frame)
		if !ok || !isMsg || sent != 1_700_000_000_123_456_789 || seq != 123456 {
			t.Fatalf("payload %d: parseFrame(%s) = %d %d %v %v", payload, frame, sent, seq, ok, isMsg)
		}
	}
	// Other key orders and spacing: the slow path.
	sent, seq, ok, isMsg := parseFrame([]byte(`{"id":"x","type":"message","data":{"s":7,"p":"","t":99}}`))
	if !ok || !isMsg || sent != 99 || seq != 7 {
		t.Fatalf("reordered: %d %d %v %v", sent, seq, ok, isMsg)
	}
	for frame, wantMsg := range map[string]bool{
		`{"type":"pong"}`: false,
		`{"type":"evicted","reason":"duplicate_login"}`: false,
		`not json`: false,
		`{"type":"message","id":"x","data":{"hello":"world"}}`:                true,
		`{"type":"message","id":"x","data":{"t":99999999999999999999,"s":1}}`: true,
		`{"type":"message","id":"x","data":{"t":5,"x":1}}`:                    true,
	} {
		if _, _, ok, isMsg := parseFrame([]byte(frame)); ok || isMsg != wantMsg {
			t.Errorf("%s: ok %v isMsg %v, want not ok, isMsg %v", frame, ok, isMsg, wantMsg)
		}
	}
}

func TestSendBody(t *testing.T) {
	s := newSender([]string{"127.0.0.1:1"}, "", 10, 4, 64, 1)
	seen := map[string]int{}
	for seq := range int64(5) {
		var b struct {
			Users []string        `json:"users"`
			Data  json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(s.body(seq, 1), &b); err != nil {
			t.Fatal(err)
		}
		if len(b.Users) != 4 {
			t.Fatalf("seq %d: %d users", seq, len(b.Users))
		}
		for _, u := range b.Users {
			seen[u]++
		}
		if seq == 2 && !slices.Equal(b.Users, []string{"u8", "u9", "u0", "u1"}) {
			t.Fatalf("seq 2: users %v, want u8 u9 u0 u1", b.Users)
		}
	}
	// 5 sends × 4 recipients over 10 users: each user twice.
	for i := range 10 {
		if seen[userID(i)] != 2 {
			t.Fatalf("users reached: %v", seen)
		}
	}
}

func TestSeqCounts(t *testing.T) {
	var a, b seqCounts
	a.add(0, 1)
	a.add(seqChunk+5, 3)
	if a.add(-1, 1) || a.add(maxMessages, 1) {
		t.Fatal("out of range sequence numbers counted")
	}
	if err := b.addEncoded(a.encode()); err != nil {
		t.Fatal(err)
	}
	if b.get(0) != 1 || b.get(seqChunk+5) != 3 || b.get(1) != 0 || b.top.Load() != seqChunk+6 {
		t.Fatalf("decoded: %d %d %d top %d", b.get(0), b.get(seqChunk+5), b.get(1), b.top.Load())
	}
	if err := b.addEncoded([]byte{1, 2, 3}); err == nil {
		t.Fatal("a ragged encoding was accepted")
	}
}

func TestPublishBody(t *testing.T) {
	s := newPublisher([]string{"127.0.0.1:1", "127.0.0.1:2"}, "", `live:"1"`, 100, 2)
	if !slices.Equal(s.urls, []string{"http://127.0.0.1:1/publish", "http://127.0.0.1:2/publish"}) {
		t.Fatalf("urls %v", s.urls)
	}
	var b struct {
		Room string          `json:"room"`
		Data json.RawMessage `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(s.body(42, 1_700_000_000_000_000_001)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil || b.Room != `live:"1"` {
		t.Fatalf("body: %+v, %v", b, err)
	}
	// What members of the room get, and what the client reads back.
	frame := session.RoomMessageFrame("01a2062b-1f19-7000-b891-1edb6a36ddbf", b.Room, b.Data)
	sent, seq, ok, isMsg := parseFrame(frame)
	if !ok || !isMsg || sent != 1_700_000_000_000_000_001 || seq != 42 {
		t.Fatalf("parseFrame(%s) = %d %d %v %v", frame, sent, seq, ok, isMsg)
	}
}

func TestDecodeAnswer(t *testing.T) {
	for _, tc := range []struct {
		body string
		want sendAnswer
	}{
		{`{"id":"x","delivered":3,"offline":1,"unreachable":0,"failed":2,"results":[{"user":"u1","status":"delivered"}]}`, sendAnswer{Delivered: 3, Offline: 1, Failed: 2}},
		{`{"id":"x","delivered":0,"offline":0,"unreachable":4,"failed":0,"results":[]}`, sendAnswer{Unreachable: 4}},
		{`{"id":"x","delivered":3,"offline":0,"unreachable":0,"failed":0,"results":[{"broken`, sendAnswer{Delivered: 3}}, // the results are not read
		{`{"id":"x","delivered":7,"nodes":[{"node":"n1","delivered":7}],"unreachable":["n2","n3"]}`, sendAnswer{Delivered: 7, Unreachable: 2}},
	} {
		got, err := decodeAnswer(strings.NewReader(tc.body))
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.body, got, err, tc.want)
		}
	}
	for _, body := range []string{``, `[]`, `{"delivered":"x"}`, `{"unreachable":{}}`} {
		if _, err := decodeAnswer(strings.NewReader(body)); err == nil {
			t.Errorf("%q: no error", body)
		}
	}
}

func TestSeqMax(t *testing.T) {
	var a, b seqMax
	a.raise(0, 5)
	a.raise(0, 3)
	a.raise(70000, 9)
	b.raise(0, 4)
	b.raise(1, 2)
	if err := b.raiseEncoded(a.encode()); err != nil {
		t.Fatal(err)
	}
	if b.get(0) != 5 || b.get(1) != 2 || b.get(70000) != 9 || b.get(2) != 0 || b.top.Load() != 70001 {
		t.Fatalf("merged: %d %d %d %d, top %d", b.get(0), b.get(1), b.get(70000), b.get(2), b.top.Load())
	}
	if err := b.raiseEncoded(make([]byte, 7)); err == nil {
		t.Fatal("7 bytes accepted")
	}
}
