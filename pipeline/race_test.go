//go:build race

package pipeline_test

// raceEnabled: the race detector slows the simulations tenfold; they run
// without it (.ci/run runs them on their own).
const raceEnabled = true
