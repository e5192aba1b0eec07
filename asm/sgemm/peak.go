package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// peakLoop emits a loop of independent chains of FMAs (or, with bf,
// VDPBF16PS) on registers only: the machine's throughput with no memory
// traffic.
func peakLoop(name string, lanes, chains int, bf bool) {
	TEXT(name, NOSPLIT, "func(iterations int)")
	flops, what, unit := 2*lanes, "FMAs", "FMA"
	if bf {
		flops, what, unit = 4*lanes, "VDPBF16PS", "bfloat16 dot-product"
	}
	Doc(
		fmt.Sprintf("%s runs iterations × %d independent %d-lane %s (%d flops each) on", name, chains, lanes, what, flops),
		fmt.Sprintf("registers only, to measure the machine's %s throughput. iterations >= 1.", unit),
	)
	Pragma("noescape")
	n := Load(Param("iterations"), GP64())
	mk := ZMM
	if lanes == 8 {
		mk = YMM
	}
	acc := make([]VecVirtual, chains)
	x, y := mk(), mk()
	VXORPS(x.AsY(), x.AsY(), x.AsY())
	VXORPS(y.AsY(), y.AsY(), y.AsY())
	for i := range acc {
		acc[i] = mk()
		VXORPS(acc[i].AsY(), acc[i].AsY(), acc[i].AsY())
	}
	Label(name + "_loop")
	for i := range acc {
		if bf {
			VDPBF16PS(x, y, acc[i])
		} else {
			VFMADD231PS(x, y, acc[i])
		}
	}
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}
