// Package crashpoint kills the process at named points of its work, for
// the fault suite (tests/faults): with DSTUNE_CRASH_AT=NAME:N in the
// environment, the N-th time Hit(NAME) is reached the process kills
// itself with SIGKILL, exactly as kill -9 at that moment would. Without
// the variable Hit does nothing.
//
// The points are where a crash could leave something half done: a
// training step complete ("train.step"), a checkpoint directory written
// but not yet in place ("checkpoint.written"), the old checkpoint moved
// aside but the new one not yet in its place ("checkpoint.swapping"), the
// new one in place with the old one not yet removed
// ("checkpoint.swapped"), and every atomic file write with its content in
// the temporary file ("atomicfile.filled:NAME", NAME the target's base
// name) or about to be renamed ("atomicfile.rename:NAME").
package crashpoint

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// Env is the environment variable that arms a point.
const Env = "DSTUNE_CRASH_AT"

var (
	armed string // the point's name; "" when none
	after int64  // the hit that kills
	hits  atomic.Int64
)

func init() {
	spec := os.Getenv(Env)
	i := strings.LastIndexByte(spec, ':')
	if i < 0 {
		return
	}
	n, err := strconv.ParseInt(spec[i+1:], 10, 64)
	if err != nil || n < 1 {
		return
	}
	armed, after = spec[:i], n
}

// Hit marks reaching the point name.
func Hit(name string) {
	if armed == "" || name != armed {
		return
	}
	if hits.Add(1) == after {
		kill()
	}
}

// Hit2 marks reaching the point prefix + ":" + name without building the
// string when nothing is armed.
func Hit2(prefix, name string) {
	if armed == "" || len(armed) != len(prefix)+1+len(name) || !strings.HasPrefix(armed, prefix) {
		return
	}
	Hit(prefix + ":" + name)
}
