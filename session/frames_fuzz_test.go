package session

import (
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

// FuzzParseClientFrame: any bytes a client sends give a frame or an error,
// never a panic; a frame is only ever read from a JSON object with a string
// "type" of that exact name. The seeds run with every go test.
func FuzzParseClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping"}`, `{"type":"ping","id":"c-1","data":{"a":[1,2,{"b":null}]}}`,
		`{"type":"PING"}`, `{"TYPE":"ping"}`, `{"Type":"ping"}`, `{"type":"p\u0069ng"}`,
		`{"type":"message","id":"c-1","data":{"to":"b"}}`, `{"type":"message","data":null}`, `{"type":"message","id":7,"data":[1,2]}`,
		`{"type":1}`, `{"type":null}`, `{"type":"ping","type":"pong"}`, `["ping"]`, `"ping"`,
		`{"type":"ping"} trailing`, `{"type":"ping"`, ``, `null`, "{\"type\":\"\xff\"}",
		`{"type":"` + string(make([]byte, 300)) + `"}`, `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := parseClientFrame(b)
		if err != nil {
			if !reflect.DeepEqual(fr, clientFrame{}) {
				t.Fatalf("error %v with a frame %+v", err, fr)
			}
			return
		}
		var fields map[string]any
		if json.Unmarshal(b, &fields) != nil {
			t.Fatalf("parsed %q, which is not a JSON object", b)
		}
		if typ, ok := fields["type"].(string); !ok || (utf8.ValidString(typ) && typ != fr.Type) {
			t.Fatalf("parsed type %q from %q, whose \"type\" is %v", fr.Type, b, fields["type"])
		}
	})
}
