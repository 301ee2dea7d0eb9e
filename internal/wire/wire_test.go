package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	b := AppendUvarint(nil, 300)
	b = AppendString(b, "héllo")
	b = AppendBytes(b, []byte{0, 1, 2})
	b = AppendBytes(b, nil)
	b = append(b, 7)
	r := NewReader(b)
	if v := r.Uvarint(); v != 300 {
		t.Fatalf("uvarint %d", v)
	}
	if s := r.String(); s != "héllo" {
		t.Fatalf("string %q", s)
	}
	if p := r.Bytes(); !bytes.Equal(p, []byte{0, 1, 2}) {
		t.Fatalf("bytes %v", p)
	}
	if p := r.Bytes(); len(p) != 0 {
		t.Fatalf("empty bytes %v", p)
	}
	if c := r.Byte(); c != 7 || r.Err() != nil {
		t.Fatalf("byte %d err %v", c, r.Err())
	}
	if r.Byte(); r.Err() == nil {
		t.Fatal("a read past the end did not fail")
	}
}

func TestTruncatedIsStickyError(t *testing.T) {
	b := AppendString(nil, "abcdef")
	for cut := range len(b) {
		r := NewReader(b[:cut])
		_ = r.String()
		if !errors.Is(r.Err(), ErrShort) {
			t.Fatalf("cut at %d: err %v", cut, r.Err())
		}
		if r.Uvarint() != 0 || r.Byte() != 0 || r.Bytes() != nil {
			t.Fatal("reads after an error must return zero values")
		}
	}
}

func TestCountCannotExceedInput(t *testing.T) {
	r := NewReader(AppendUvarint(nil, 1<<40))
	if n := r.Count(); n != 0 || r.Err() == nil {
		t.Fatalf("count %d err %v: a huge count must fail", n, r.Err())
	}
}
