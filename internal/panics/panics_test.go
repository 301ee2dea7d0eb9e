package panics

import (
	"strings"
	"testing"
)

func TestAttrs(t *testing.T) {
	var got []any
	func() {
		defer func() { got = Attrs(recover()) }()
		panic("boom")
	}()
	if len(got) != 4 || got[0] != "panic" || got[1] != "boom" || got[2] != "stack" {
		t.Fatalf("Attrs = %v", got)
	}
	if stack := got[3].(string); !strings.Contains(stack, "TestAttrs") {
		t.Errorf("stack does not show the panicking test:\n%s", stack)
	}
}
