package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestBenchCommand checks the dispatch of `wsmesh bench` and its exit
// codes; loadgen's tests run the tool itself.
func TestBenchCommand(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help lists it", []string{"help"}, 0, "wsmesh bench [flags]", ""},
		{"bench help", []string{"bench", "-h"}, 0, "Usage: wsmesh bench", ""},
		{"bad value", []string{"bench", "-recipients", "0"}, 2, "", "wsmesh bench: -recipients 0: want 1 to -users (100)"},
		{"unknown flag", []string{"bench", "-bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{"exclusive flags", []string{"bench", "-spawn", "2", "-nodes", "127.0.0.1:8081"}, 2, "", "-spawn and -nodes exclude each other"},
		{"stray argument", []string{"bench", "now"}, 2, "", `unexpected argument "now"`},
		{"publishers without a room", []string{"bench", "-publishers", "4"}, 2, "", "wsmesh bench: -publishers applies only with -room"},
		{"room with recipients", []string{"bench", "-room", "r", "-recipients", "10"}, 2, "", "-recipients does not apply with -room"},
		{"bad room", []string{"bench", "-room", "a b"}, 2, "", `-room "a b": bad room name`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if tc.code == 2 && (!strings.Contains(errb.String(), "Usage: wsmesh bench") || out.Len() != 0) {
				t.Fatalf("usage error: want the bench usage on stderr and nothing on stdout\nstdout: %s\nstderr: %s", out.String(), errb.String())
			}
		})
	}
}
