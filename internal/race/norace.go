//go:build !race

// Package race reports whether the race detector is on, for tests whose
// assertions it changes (it makes sync.Pool drop items at random, so
// allocation counts are not meaningful under -race).
package race

// Enabled is true when built with -race.
const Enabled = false
