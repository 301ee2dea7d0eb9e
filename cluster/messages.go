package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"wsmesh/internal/wire"
)

// This file is the wire format of everything one node sends another: one
// struct per message, each with an append method (encode) and a decode
// function. Nothing else in the package reads or writes these bytes.
//
// A link message is a memberlist user message, sent with SendReliable:
//
//	type byte | from | link | seq | body | epoch | MAC
//
// from is the sender's name, link and seq number the sender's link and the
// batch on it (an ack repeats those of its batch), epoch the sender's boot
// epoch: the receiver takes the message only if memberlist knows a member
// of that name with that epoch (its meta), so that a process started with
// a live node's name cannot speak for it (peer.receive, handleAck, and
// sameRun for the first release's messages, which have none). The epoch
// trails the body, where a decoder of the first release ignores it. A
// batch's body is a count and that many items, each a kind byte and a
// length-prefixed item body; an ack's body is a count and that many
// length-prefixed replies, one per item of its batch. The MAC (linkauth.go) is sealed around the encoded bytes and
// checked before anything is decoded.
//
// Gossip carries two more: the node meta (the boot epoch) and the push/pull
// digest (name, epoch, seq).
//
// Integers are unsigned varints; strings and byte strings are
// length-prefixed (internal/wire). A decoder returns an error for input it
// cannot read, never a panic, and allocates a bounded multiple of the
// input's size: no count is believed beyond the bytes left to hold it
// (wire.Reader.Count). It ignores bytes after the fields it knows, so that
// a later version may append fields. Byte strings it returns alias its
// input; strings are copies.

// Protocol numbers. ONLY APPEND: the numeric values are part of the
// protocol. Never renumber or reuse one; add a new value for a new message.
const (
	// Message types: the first byte of every link message.
	msgBatch msgType = 1 // batchMsg
	msgAck   msgType = 2 // ackMsg

	// Item kinds: the first byte of every item in a batch.
	kindSnapshot    itemKind = 1  // snapshotMsg: the sender's sessions, replacing what the receiver knows of them
	kindDelta       itemKind = 2  // deltaMsg: one connect or disconnect on the sender
	kindSnapshotReq itemKind = 3  // snapshotReqMsg: "send me your snapshot"
	kindEvict       itemKind = 4  // evictMsg: a newer login of a key the receiver holds
	kindLeaving     itemKind = 5  // leavingMsg: the sender leaves on purpose: report it "left", not "dead"
	kindRelay       itemKind = 16 // relayMsg: for the relay Handler; its reply goes back in the ack

	// Snapshot chunk flags (snapshotMsg.More).
	chunkMore byte = 1 // more chunks of this snapshot follow

	// Delta ops.
	opConnect    deltaOp = 1
	opDisconnect deltaOp = 2
	opRoom       deltaOp = 3 // the sender's member count of a room (0: none left)
)

type (
	msgType  byte // the type of a link message
	itemKind byte // the kind of an item in a batch
	deltaOp  byte // what a delta says happened
)

// Decode errors, besides wire.ErrShort.
var (
	errWrongType = errors.New("empty or of another type")
	errUnknownOp = errors.New("unknown delta op")
)

// decodeErr names the message that failed to decode.
func decodeErr(what string, err error) error {
	return fmt.Errorf("cluster: decode %s: %w", what, err)
}

// header opens every link message, after its type byte; Epoch is
// written at its end (appendEpoch).
type header struct {
	From      string // the sender's name
	Link, Seq uint64 // the sender's link id and the batch's number on it
	Epoch     uint64 // the sender's boot epoch; 0: not sent (the first release)
}

func (h *header) append(b []byte, t msgType) []byte {
	b = append(b, byte(t))
	b = wire.AppendString(b, h.From)
	b = wire.AppendUvarint(b, h.Link)
	return wire.AppendUvarint(b, h.Seq)
}

// size bounds the encoded header and epoch, with room for the MAC that
// seal appends.
func (h *header) size() int { return 1 + 4*binary.MaxVarintLen64 + len(h.From) + macSize }

// appendEpoch ends a link message with the sender's epoch.
func (h *header) appendEpoch(b []byte) []byte { return wire.AppendUvarint(b, h.Epoch) }

// readEpoch reads the epoch at the end of a link message, if there is one.
func (h *header) readEpoch(r *wire.Reader) { h.Epoch, _ = optUvarint(r) }

// optUvarint reads a trailing varint field that an older sender does not
// write: false if there is none (or r failed before).
func optUvarint(r *wire.Reader) (uint64, bool) {
	if r.Err() != nil {
		return 0, false
	}
	probe := *r
	v := probe.Uvarint()
	if probe.Err() != nil {
		return 0, false
	}
	*r = probe
	return v, true
}

func readHeader(r *wire.Reader) header {
	return header{From: r.String(), Link: r.Uvarint(), Seq: r.Uvarint()}
}

// appendEnvelope appends a link message of type t: the type byte, h, then
// the count of its elements (items in a batch, replies in an ack), which
// the caller appends next.
func appendEnvelope(b []byte, t msgType, h *header, count int) []byte {
	return wire.AppendUvarint(h.append(b, t), uint64(count))
}

// readEnvelope reads what appendEnvelope wrote, if b is a message of type
// t: the header and the count of elements that follow, bounded by the
// bytes left (wire.Reader.Count).
func readEnvelope(b []byte, t msgType) (r wire.Reader, h header, count int, err error) {
	if len(b) == 0 || msgType(b[0]) != t {
		return r, header{}, 0, errWrongType
	}
	r = *wire.NewReader(b[1:])
	h = readHeader(&r)
	return r, h, r.Count(), r.Err()
}

// item is one item of a batch: its kind and its encoded body.
type item struct {
	Kind itemKind
	Body []byte
}

// batchMsg carries a link's items, in order. The receiver handles them in
// order and answers with one ackMsg.
type batchMsg struct {
	header
	Items []item
}

func (m *batchMsg) append(b []byte) []byte {
	b = appendEnvelope(b, msgBatch, &m.header, len(m.Items))
	for _, it := range m.Items {
		b = wire.AppendBytes(append(b, byte(it.Kind)), it.Body)
	}
	return m.appendEpoch(b)
}

// encode returns m's bytes with room for the MAC after them.
func (m *batchMsg) encode() []byte {
	size := m.header.size() + binary.MaxVarintLen64
	for _, it := range m.Items {
		size += 1 + binary.MaxVarintLen32 + len(it.Body)
	}
	return m.append(make([]byte, 0, size))
}

// batchPool recycles decoded batches with their items' arrays: a link's
// receiver releases each batch once it has handled it.
var batchPool = sync.Pool{New: func() any { return new(batchMsg) }}

// decodeBatch decodes a batch. The caller may hand it back with release
// once done with it.
func decodeBatch(b []byte) (*batchMsg, error) {
	r, h, n, err := readEnvelope(b, msgBatch)
	if err != nil {
		return nil, decodeErr("batch", err)
	}
	m := batchPool.Get().(*batchMsg)
	spare := m.Items[:0] // from an earlier batch, released
	m.header, m.Items = h, nil
	if n > 0 {
		m.Items = slices.Grow(spare, n)[:n]
		for i := range m.Items {
			m.Items[i] = item{Kind: itemKind(r.Byte()), Body: r.Bytes()}
		}
	}
	m.readEpoch(&r)
	if err := r.Err(); err != nil {
		m.release()
		return nil, decodeErr("batch", err)
	}
	return m, nil
}

// release hands a decoded batch back for reuse: m and its items must not
// be used afterwards.
func (m *batchMsg) release() {
	clear(m.Items)
	*m = batchMsg{Items: m.Items[:0]}
	batchPool.Put(m)
}

// ackMsg answers a batch: Replies[i] is the reply to its item i (empty for
// items that have none).
type ackMsg struct {
	header
	Replies [][]byte
}

func (m *ackMsg) append(b []byte) []byte {
	b = appendEnvelope(b, msgAck, &m.header, len(m.Replies))
	for _, reply := range m.Replies {
		b = wire.AppendBytes(b, reply)
	}
	return m.appendEpoch(b)
}

// encode returns m's bytes with room for the MAC after them.
func (m *ackMsg) encode() []byte {
	size := m.header.size() + binary.MaxVarintLen64
	for _, reply := range m.Replies {
		size += binary.MaxVarintLen32 + len(reply)
	}
	return m.append(make([]byte, 0, size))
}

func decodeAck(b []byte) (*ackMsg, error) {
	r, h, n, err := readEnvelope(b, msgAck)
	m := &ackMsg{header: h}
	if err == nil && n > 0 {
		m.Replies = make([][]byte, n)
		for i := range m.Replies {
			m.Replies[i] = r.Bytes()
		}
		err = r.Err()
	}
	if err == nil {
		m.readEpoch(&r)
	}
	if err != nil {
		return nil, decodeErr("ack", err)
	}
	return m, nil
}

// itemMsg is the body of one batch item: one struct per item kind, each
// with a decodeX function beside it.
type itemMsg interface {
	// append appends the body's encoding to b.
	append(b []byte) []byte
	// item returns the body as an item of its kind, ready to queue.
	item() item
}

var _ = []itemMsg{snapshotMsg{}, deltaMsg{}, snapshotReqMsg{}, evictMsg{}, leavingMsg{}, relayMsg{}}

// appendEntry writes what the wire carries of a session: its id, user,
// device and stamp. The node is the sender's, or written apart (evictMsg).
func appendEntry(b []byte, e *Entry) []byte {
	b = wire.AppendString(b, e.Session)
	b = wire.AppendString(b, e.User)
	b = wire.AppendString(b, e.Device)
	return wire.AppendUvarint(b, uint64(e.Stamp))
}

// readEntry reads what appendEntry wrote; Node is left empty.
func readEntry(r *wire.Reader) *Entry {
	return &Entry{Session: r.String(), User: r.String(), Device: r.String(), Stamp: Stamp(r.Uvarint())}
}

// entrySize is the size of appendEntry's encoding of e.
func entrySize(e *Entry) int {
	return uvarintLen(uint64(len(e.Session))) + len(e.Session) +
		uvarintLen(uint64(len(e.User))) + len(e.User) +
		uvarintLen(uint64(len(e.Device))) + len(e.Device) +
		uvarintLen(uint64(e.Stamp))
}

// snapshotMsg is one chunk of its sender's sessions, as of delta Seq of
// its boot epoch Epoch: chunk number Index (from 0) of a snapshot whose
// last chunk has More false. Each chunk fits a batch (snapshotChunkBytes);
// the receiver applies a snapshot once it has every chunk (sessions.go).
// Index and the flags trail the entries: a snapshot of the first release,
// sent whole, reads as chunk 0 with no more to follow.
//
// Rooms, the sender's member count of each room it has members in, trail
// the flags (a decoder of an earlier version ignores them): a snapshot's
// chunks carry its sessions first, then its rooms.
type snapshotMsg struct {
	Epoch, Seq uint64
	Index      uint64   // this chunk's number in its snapshot
	More       bool     // more chunks of this snapshot follow
	Entries    []*Entry // Node is not sent: it is the sender
	Rooms      []RoomCount
}

// RoomCount is how many members a room has on one node.
type RoomCount struct {
	Room    string
	Node    string // not sent: the sender
	Members int
}

func (m snapshotMsg) append(b []byte) []byte {
	b = wire.AppendUvarint(b, m.Epoch)
	b = wire.AppendUvarint(b, m.Seq)
	b = wire.AppendUvarint(b, uint64(len(m.Entries)))
	for _, e := range m.Entries {
		b = appendEntry(b, e)
	}
	b = wire.AppendUvarint(b, m.Index)
	var flags byte
	if m.More {
		flags |= chunkMore
	}
	b = append(b, flags)
	b = wire.AppendUvarint(b, uint64(len(m.Rooms)))
	for _, r := range m.Rooms {
		b = wire.AppendString(b, r.Room)
		b = wire.AppendUvarint(b, uint64(r.Members))
	}
	return b
}

func (m snapshotMsg) item() item { return item{Kind: kindSnapshot, Body: m.append(nil)} }

// snapshotChunk encodes chunk index of a snapshot (epoch, seq) as an
// item: entries from the front of rest, then rooms from the front of
// rooms once rest is all taken, while the body stays within maxBytes (at
// least one of either), and reports how many of each it took. The chunk
// is the last one when it takes all of both.
func snapshotChunk(epoch, seq, index uint64, rest []*Entry, rooms []RoomCount, maxBytes int) (it item, entries, roomsTaken int) {
	size, n := 4*binary.MaxVarintLen64+binary.MaxVarintLen64+1, 0
	for n < len(rest) {
		s := entrySize(rest[n])
		if n > 0 && size+s > maxBytes {
			break
		}
		size += s
		n++
	}
	k := 0
	for n == len(rest) && k < len(rooms) {
		s := uvarintLen(uint64(len(rooms[k].Room))) + len(rooms[k].Room) + binary.MaxVarintLen64
		if n+k > 0 && size+s > maxBytes {
			break
		}
		size += s
		k++
	}
	m := snapshotMsg{Epoch: epoch, Seq: seq, Index: index, More: n < len(rest) || k < len(rooms), Entries: rest[:n], Rooms: rooms[:k]}
	return item{Kind: kindSnapshot, Body: m.append(make([]byte, 0, size))}, n, k
}

// minEntrySize is the least an entry takes on the wire: three empty
// strings and a stamp, a byte each.
const minEntrySize = 4

// decodeSnapshot decodes a snapshot chunk with two allocations for all its
// entries, not four per entry, so that a joiner taking in a million
// sessions leaves the garbage collector (and the lookups it would slow)
// little to do: the entries are one array, and their strings substrings of
// one copy of b. An entry kept in the table keeps that copy and that array
// alive: a chunk's memory (at most snapshotChunkBytes, and the entries)
// is freed when the last of its sessions has gone.
func decodeSnapshot(b []byte) (snapshotMsg, error) {
	d := chunkReader{b: b}
	m := snapshotMsg{Epoch: d.uvarint(), Seq: d.uvarint()}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(b)-d.off)/minEntrySize {
		d.err = wire.ErrShort // more entries than the bytes left could hold
	}
	if d.err == nil && n > 0 {
		all := string(b)
		entries := make([]Entry, n)
		m.Entries = make([]*Entry, n)
		for i := range entries {
			e := &entries[i]
			e.Session, e.User, e.Device = d.str(all), d.str(all), d.str(all)
			e.Stamp = Stamp(d.uvarint())
			m.Entries[i] = e
		}
	}
	if d.err != nil {
		return snapshotMsg{}, decodeErr("snapshot", d.err)
	}
	if d.off < len(b) { // chunk index and flags, which the first release did not send
		m.Index = d.uvarint()
		if d.err == nil && d.off < len(b) {
			m.More = b[d.off]&chunkMore != 0
			d.off++
		}
		if d.err != nil {
			m.Index = 0
			return m, nil
		}
	}
	if d.off < len(b) { // rooms, which the first release did not send
		r := wire.NewReader(b[d.off:])
		if n := r.Count(); n > 0 {
			m.Rooms = make([]RoomCount, n)
			for i := range m.Rooms {
				m.Rooms[i] = RoomCount{Room: r.String(), Members: int(min(r.Uvarint(), maxRoomMembers))}
			}
		}
		if r.Err() != nil {
			return snapshotMsg{}, decodeErr("snapshot rooms", r.Err())
		}
	}
	return m, nil
}

// maxRoomMembers bounds a member count read from the wire, so that a sum
// of counts cannot overflow an int.
const maxRoomMembers = 1 << 40

// chunkReader reads a snapshot chunk as wire.Reader would, by offset into
// b, so that decodeSnapshot can cut its strings from one copy of b.
type chunkReader struct {
	b   []byte
	off int
	err error
}

func (d *chunkReader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, k := binary.Uvarint(d.b[d.off:])
	if k <= 0 {
		d.err = wire.ErrShort
		return 0
	}
	d.off += k
	return v
}

// str reads a length-prefixed string: the same bytes of all, a copy of b.
func (d *chunkReader) str(all string) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)-d.off) {
		d.err = wire.ErrShort
		return ""
	}
	s := all[d.off : d.off+int(n)]
	d.off += int(n)
	return s
}

// deltaMsg is one change to its sender's sessions or rooms, number Seq
// of its boot epoch Epoch: a connect carries the whole entry, a
// disconnect only the session id (Entry.Session), a room change the room
// and the sender's member count of it (Room).
type deltaMsg struct {
	Epoch, Seq uint64
	Op         deltaOp
	Entry      *Entry    // opConnect, opDisconnect; Node is not sent: it is the sender
	Room       RoomCount // opRoom
}

func (m deltaMsg) append(b []byte) []byte {
	b = wire.AppendUvarint(b, m.Epoch)
	b = wire.AppendUvarint(b, m.Seq)
	b = append(b, byte(m.Op))
	switch m.Op {
	case opConnect:
		return appendEntry(b, m.Entry)
	case opRoom:
		b = wire.AppendString(b, m.Room.Room)
		return wire.AppendUvarint(b, uint64(m.Room.Members))
	}
	return wire.AppendString(b, m.Entry.Session)
}

func (m deltaMsg) item() item { return item{Kind: kindDelta, Body: m.append(nil)} }

func decodeDelta(b []byte) (deltaMsg, error) {
	r := wire.NewReader(b)
	m := deltaMsg{Epoch: r.Uvarint(), Seq: r.Uvarint(), Op: deltaOp(r.Byte())}
	switch m.Op {
	case opConnect:
		m.Entry = readEntry(r)
	case opDisconnect:
		m.Entry = &Entry{Session: r.String()}
	case opRoom:
		m.Room = RoomCount{Room: r.String(), Members: int(min(r.Uvarint(), maxRoomMembers))}
	default:
		if r.Err() == nil {
			return deltaMsg{}, decodeErr("delta", fmt.Errorf("%w %d", errUnknownOp, m.Op))
		}
	}
	if r.Err() != nil {
		return deltaMsg{}, decodeErr("delta", r.Err())
	}
	return m, nil
}

// evictMsg tells the node holding session Session of User that Winner, a
// newer login of the same key accepted by the sender, replaces it.
type evictMsg struct {
	User, Session string
	Winner        *Entry // Node included
}

func (m evictMsg) append(b []byte) []byte {
	b = wire.AppendString(b, m.User)
	b = wire.AppendString(b, m.Session)
	b = appendEntry(b, m.Winner)
	return wire.AppendString(b, m.Winner.Node)
}

func (m evictMsg) item() item { return item{Kind: kindEvict, Body: m.append(nil)} }

func decodeEvict(b []byte) (evictMsg, error) {
	r := wire.NewReader(b)
	m := evictMsg{User: r.String(), Session: r.String(), Winner: readEntry(r)}
	m.Winner.Node = r.String()
	if r.Err() != nil {
		return evictMsg{}, decodeErr("evict", r.Err())
	}
	return m, nil
}

// snapshotReqMsg asks the receiver for its snapshot. A snapshot that the
// receiver is sending already answers it, unless Restart is set: the
// sender lost track of the one under way (a chunk missing) and needs one
// from the start. The body is empty, or one byte 1 for Restart.
type snapshotReqMsg struct{ Restart bool }

func (m snapshotReqMsg) append(b []byte) []byte {
	if m.Restart {
		b = append(b, 1)
	}
	return b
}

func (m snapshotReqMsg) item() item { return item{Kind: kindSnapshotReq, Body: m.append(nil)} }

func decodeSnapshotReq(b []byte) (snapshotReqMsg, error) {
	return snapshotReqMsg{Restart: len(b) > 0 && b[0] == 1}, nil
}

// leavingMsg says the sender is leaving on purpose. No body.
type leavingMsg struct{}

func (leavingMsg) append(b []byte) []byte { return b }
func (leavingMsg) item() item             { return item{Kind: kindLeaving} }

func decodeLeaving([]byte) (leavingMsg, error) { return leavingMsg{}, nil }

// relayMsg is a payload for the receiver's Handler.HandleRelay: opaque
// here, the relay package owns its format. Its body is the payload as is.
type relayMsg struct{ Payload []byte }

func (m relayMsg) append(b []byte) []byte { return append(b, m.Payload...) }

// item uses the payload as the body without copying it: the caller must
// not modify it afterwards.
func (m relayMsg) item() item { return item{Kind: kindRelay, Body: m.Payload} }

func decodeRelay(b []byte) (relayMsg, error) { return relayMsg{Payload: b}, nil }

// digestMsg is what a node gossips in memberlist's push/pull: its name,
// boot epoch and last delta seq, not its sessions. A peer that is behind
// asks for a snapshot over the link.
type digestMsg struct {
	Node       string
	Epoch, Seq uint64
}

func (m digestMsg) append(b []byte) []byte {
	b = wire.AppendString(b, m.Node)
	b = wire.AppendUvarint(b, m.Epoch)
	return wire.AppendUvarint(b, m.Seq)
}

func decodeDigest(b []byte) (digestMsg, error) {
	r := wire.NewReader(b)
	m := digestMsg{Node: r.String(), Epoch: r.Uvarint(), Seq: r.Uvarint()}
	if r.Err() != nil {
		return digestMsg{}, decodeErr("digest", r.Err())
	}
	return m, nil
}

// metaMsg is a node's memberlist meta: its boot epoch, 8 bytes big-endian.
type metaMsg struct{ Epoch uint64 }

func (m metaMsg) append(b []byte) []byte { return binary.BigEndian.AppendUint64(b, m.Epoch) }

func decodeMeta(b []byte) (metaMsg, error) {
	if len(b) < 8 {
		return metaMsg{}, decodeErr("meta", wire.ErrShort)
	}
	return metaMsg{Epoch: binary.BigEndian.Uint64(b)}, nil
}

// uvarintLen is the length of v's unsigned varint encoding.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
