// Package frame gives the avo generators the frame addresses of the active
// function's arguments and results, so that floats move between the frame
// and vector registers with VEX instructions (VBROADCASTSS, VMOVSS). avo's
// Load and Store of a float32 emit SSE's MOVSS instead, and an SSE
// instruction after a VEX one has written a full vector register is an
// SSE/AVX transition, which some x86 cores charge hundreds of cycles for
// (about 0.1 µs a call on a Zen 3 host: more than a 256-element LayerNorm
// row's work). kernels' TestAssemblyHasNoLegacySSE keeps the generated code
// free of SSE.
package frame

import (
	"github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/gotypes"
	"github.com/mmcloughlin/avo/operand"
)

// Param is the address of the active function's argument name.
func Param(name string) operand.Mem { return addr(build.Param(name)) }

// Return is the address of the active function's result name.
func Return(name string) operand.Mem { return addr(build.Return(name)) }

func addr(c gotypes.Component) operand.Mem {
	b, err := c.Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}
