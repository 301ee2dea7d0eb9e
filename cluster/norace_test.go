//go:build !race

package cluster

// raceSlack scales time limits under the race detector (race_test.go).
const raceSlack = 1
