//go:build race

package ingest

// raceEnabled tells the cost tests that the race detector multiplies CPU time and allocations.
const raceEnabled = true
