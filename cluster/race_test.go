//go:build race

package cluster

// raceSlack scales time limits under the race detector, which slows
// this package's code 5-10x.
const raceSlack = 10
