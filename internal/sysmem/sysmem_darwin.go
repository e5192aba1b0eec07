package sysmem

import "golang.org/x/sys/unix"

// addressSpaceLimit: macOS does not enforce RLIMIT_AS.
func addressSpaceLimit() int64 { return 0 }

func physical() int64 {
	n, err := unix.SysctlUint64("hw.memsize")
	if err != nil {
		return 0
	}
	return int64(n)
}

func cgroupLimit() int64 { return 0 }

// rss knows the peak only (getrusage's maxrss, in bytes on Darwin).
func rss() (current, peak int64) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return 0, ru.Maxrss
}
