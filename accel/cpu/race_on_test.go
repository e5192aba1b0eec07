//go:build race

package cpu

// raceEnabled: the race detector makes sync.Pool drop items, so the pooled
// tasks of package kernels are reallocated and allocation counts are not
// meaningful.
const raceEnabled = true
