// Package sysmem tells how much memory this process may use: the
// machine's physical memory, or less where a control group (a container)
// limits it, and the default budget dstune plans allocations against.
package sysmem

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
)

var total = sync.OnceValue(func() int64 {
	n := physical()
	for _, c := range []int64{cgroupLimit(), addressSpaceLimit()} {
		if c > 0 && (n == 0 || c < n) {
			n = c
		}
	}
	return n
})

// Total is the memory this process may use in bytes: physical memory, or
// less where its control group limits it or a limit on its address space
// (RLIMIT_AS, ulimit -v) leaves less; 0 when unknown.
func Total() int64 { return total() }

// DefaultFraction is the share of Total that Default budgets.
const DefaultFraction = 0.75

// Default is the memory budget when none is given: DefaultFraction of
// Total (0, no budget, when Total is unknown).
func Default() int64 { return int64(float64(Total()) * DefaultFraction) }

// ParseSize reads a byte count: an integer or decimal number with an
// optional unit, B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB or
// K/M/G/T (powers of 1024), e.g. "512MiB", "8G", "1.5GiB".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("%q is not a size (want bytes, or a number with KiB, MiB, GiB, TiB, KB, MB, GB or TB)", s)
	}
	mult, ok := map[string]float64{"": 1, "B": 1,
		"K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20, "G": 1 << 30, "GiB": 1 << 30, "T": 1 << 40, "TiB": 1 << 40,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q (want KiB, MiB, GiB, TiB, KB, MB, GB or TB)", s, unit)
	}
	b := v * mult
	if b < 1 || b > 1<<62 {
		return 0, fmt.Errorf("%q is not a size between 1 byte and 4 EiB", s)
	}
	return int64(b), nil
}

// Format writes a byte count for people: "1.5 GiB", "640 MiB", "12 KiB".
func Format(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

// RSS is this process's resident memory now and at its peak, in bytes
// (0 where the system does not say).
func RSS() (current, peak int64) { return rss() }
