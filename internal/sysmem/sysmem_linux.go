package sysmem

import (
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// addressSpaceLimit is what the soft limit on this process's address
// space (RLIMIT_AS, ulimit -v) leaves of it now, 0 when there is no limit.
// The Go runtime alone reserves about a gigabyte of address space it never
// touches, so the limit itself would overstate what can be allocated.
func addressSpaceLimit() int64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_AS, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY || lim.Cur > 1<<62 {
		return 0
	}
	return max(int64(lim.Cur)-statusBytes("VmSize")[0], 1)
}

func physical() int64 {
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return 0
	}
	return int64(info.Totalram) * int64(info.Unit)
}

// cgroupLimit is the memory limit of this process's control group
// (cgroup v2 memory.max, or v1 memory.limit_in_bytes), 0 when none.
func cgroupLimit() int64 {
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 && n < 1<<60 {
			return n
		}
	}
	return 0
}

// rss reads VmRSS and VmHWM (the peak) of /proc/self/status.
func rss() (current, peak int64) {
	v := statusBytes("VmRSS", "VmHWM")
	return v[0], v[1]
}

// statusBytes reads size fields of /proc/self/status, in bytes (0 for one
// that is absent), in one read of the file.
func statusBytes(fields ...string) []int64 {
	out := make([]int64, len(fields))
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		i := slices.Index(fields, name)
		f := strings.Fields(value)
		if i < 0 || len(f) != 2 || f[1] != "kB" {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			out[i] = n << 10
		}
	}
	return out
}
