// Command testsummary reads `go test -json` on stdin and prints what CI
// needs: go test's own per-package result lines, the whole output of every
// failed test, the reason of every skipped one, and a closing line
// "N passed, M failed, K skipped" counting tests (subtests included).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	outputs := map[string][]string{} // package/test -> output lines
	var passed, failed, skipped int
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Println(sc.Text()) // build errors and the like come as plain text
			continue
		}
		key := e.Package + "/" + e.Test
		switch e.Action {
		case "output":
			if e.Test == "" {
				// Package-level lines: print go test's summary lines as they are.
				if strings.HasPrefix(e.Output, "ok ") || strings.HasPrefix(e.Output, "FAIL") ||
					strings.HasPrefix(e.Output, "?") || strings.HasPrefix(e.Output, "panic:") {
					fmt.Print(e.Output)
				} else {
					outputs[key] = append(outputs[key], e.Output)
				}
				continue
			}
			outputs[key] = append(outputs[key], e.Output)
		case "pass":
			if e.Test != "" {
				passed++
			}
			delete(outputs, key)
		case "skip":
			if e.Test != "" {
				skipped++
				fmt.Printf("--- SKIP: %s (%s)\n", e.Test, e.Package)
				for _, l := range outputs[key] {
					if strings.Contains(l, "_test.go:") {
						fmt.Print(l)
					}
				}
			}
			delete(outputs, key)
		case "fail":
			if e.Test != "" {
				failed++
				fmt.Printf("--- FAIL: %s (%s, %.2fs)\n", e.Test, e.Package, e.Elapsed)
				for _, l := range outputs[key] {
					fmt.Print(l)
				}
			} else {
				for _, l := range outputs[key] { // a package that failed outside its tests
					fmt.Print(l)
				}
			}
			delete(outputs, key)
		}
	}
	fmt.Printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped)
}
