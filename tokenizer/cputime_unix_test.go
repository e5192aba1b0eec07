//go:build unix

package tokenizer

import "syscall"

// cpuSeconds is the CPU time this process has used, so that benchmarks
// can report throughput per CPU second on a loaded machine.
func cpuSeconds() float64 {
	var u syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &u) != nil {
		return 0
	}
	return float64(u.Utime.Sec+u.Stime.Sec) + float64(u.Utime.Usec+u.Stime.Usec)/1e6
}
