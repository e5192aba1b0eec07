package ir

import (
	"fmt"
	"sync/atomic"

	"github.com/dstune/dstune/internal/sysmem"
)

// memoryLimit is the budget set by SetMemoryLimit (0: sysmem.Default).
var memoryLimit atomic.Int64

// SetMemoryLimit sets the memory budget, in bytes, that bounds the tensors
// Expand, ConstantOfShape, Tile and Resize make (ops whose output may be
// far larger than their input, so that a tiny model can ask for any
// amount), besides the 16 GiB every tensor is bounded by; 0 restores the
// default, sysmem.Default (3/4 of the memory this process may use). It
// returns the previous setting.
func SetMemoryLimit(bytes int64) int64 { return memoryLimit.Swap(max(bytes, 0)) }

// MemoryLimit is the budget in effect (0: none known).
func MemoryLimit() int64 {
	if v := memoryLimit.Load(); v > 0 {
		return v
	}
	return sysmem.Default()
}

// checkAmplified bounds the output shape s of an op that enlarges its
// input by limit (maxTensorBytes, or maxFoldBytes for a folded constant)
// and by the memory limit.
func checkAmplified(s Shape, elemSize int, limit int64) error {
	if err := checkShape(s, elemSize, limit); err != nil {
		return err
	}
	m := MemoryLimit()
	if m <= 0 {
		return nil
	}
	bytes := int64(s.Size()) * int64(max(elemSize, 1)) // ≤ limit: no overflow
	if bytes > m {
		return fmt.Errorf("a tensor of shape %v takes %s, more than the memory limit of %s", s, sysmem.Format(bytes), sysmem.Format(m))
	}
	return nil
}
