package session

import (
	"encoding/json"
	"testing"
	"unsafe"
)

func TestRoomAllowed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		claim []string
		room  string
		want  bool
	}{
		{"no claim", nil, "live:42", false},
		{"empty claim", []string{}, "live:42", false},
		{"exact", []string{"news"}, "news", true},
		{"exact, other room", []string{"news"}, "news2", false},
		{"exact is not a prefix", []string{"news"}, "news:1", false},
		{"prefix", []string{"live:*"}, "live:42", true},
		{"prefix, nothing after it", []string{"live:*"}, "live:", true},
		{"prefix, other room", []string{"live:*"}, "lives", false},
		{"prefix, shorter room", []string{"live:*"}, "live", false},
		{"any", []string{"*"}, "whatever", true},
		{"second entry", []string{"a", "b:*"}, "b:c", true},
		{"star inside is literal", []string{"a*b"}, "axb", false},
		{"star inside, exact", []string{"a*b"}, "a*b", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := roomAllowed(tc.claim, tc.room); got != tc.want {
				t.Errorf("roomAllowed(%q, %q) = %v, want %v", tc.claim, tc.room, got, tc.want)
			}
		})
	}
}

// TestSessionSize: a Session fits Go's 256-byte size class, so rooms cost
// an idle connection in no room nothing. A field more moves every
// Session to the 288-byte class: put it in roomState-like lazily
// allocated state, or reorder to fill padding.
func TestSessionSize(t *testing.T) {
	if n := unsafe.Sizeof(Session{}); n > 256 {
		t.Errorf("Session is %d bytes, want at most 256", n)
	}
}

func TestRoomFrames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  map[string]any
	}{
		{"message", RoomMessageFrame("m1", "live:42", []byte(`{"a":[1,"x"]}`)),
			map[string]any{"type": "message", "id": "m1", "room": "live:42", "data": map[string]any{"a": []any{1.0, "x"}}}},
		{"message, quotes in room", RoomMessageFrame("m\"2", `r"\`, []byte(`null`)),
			map[string]any{"type": "message", "id": "m\"2", "room": `r"\`, "data": nil}},
		{"joined", roomFrame("joined", "live:42"), map[string]any{"type": "joined", "room": "live:42"}},
		{"left", roomFrame("left", `a"b`), map[string]any{"type": "left", "room": `a"b`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got map[string]any
			if err := json.Unmarshal(tc.frame, &got); err != nil {
				t.Fatalf("%q is not JSON: %v", tc.frame, err)
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(tc.want)
			if string(gb) != string(wb) {
				t.Errorf("%s, want %s", gb, wb)
			}
		})
	}
}

// TestFramesNotHTMLEscaped: a reason with quotes and <, >, & reaches the
// client as written, not as \u003c (the frames are JSON for programs, not
// HTML).
func TestFramesNotHTMLEscaped(t *testing.T) {
	got := string(errorFrame("message", "", `a message is {"type":"message","data":<JSON>} & more`))
	want := `{"type":"error","op":"message","reason":"a message is {\"type\":\"message\",\"data\":<JSON>} & more"}`
	if got != want {
		t.Fatalf("frame %s, want %s", got, want)
	}
}
