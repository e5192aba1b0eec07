// Command sgemm generates dstune's SGEMM micro-kernels (kernels/sgemm_amd64.s)
// and, with -peak, the FMA-peak loops (kernels/peak_fma_amd64.s) with avo.
//
//	go run ./sgemm -out ../kernels/sgemm_amd64.s -stubs ../kernels/sgemm_stubs_amd64.go -pkg kernels
//	go run ./sgemm -peak -out ../kernels/peak_fma_amd64.s -stubs ../kernels/peak_fma_stubs_amd64.go -pkg kernels
//
// A micro-kernel computes one MR×NR tile of C from packed panels:
//
//	a: kc×MR floats, a[p*MR+r] = op(A)(i+r, p)
//	b: kc×NR floats, b[p*NR+j] = op(B)(p, j0+j)
//
// It keeps the whole tile in vector registers (rows of C along the vector
// lanes), so each step p costs NR/W vector loads of b, MR broadcasts of a and
// MR·NR/W FMAs with no other memory traffic. Only the first rows×cols of the
// tile are stored; the others come from zero padding in the panels. Columns
// past cols are masked off on load and store, so edge tiles run the same loop
// as full ones.
package main

import (
	"flag"
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

var peak = flag.Bool("peak", false, "generate the FMA-peak loops instead of the SGEMM kernels")

// Micro-tile shapes. These must agree with the constants in
// kernels/sgemm_amd64.go.
const (
	// AVX-512: 14 rows × 2 zmm = 28 accumulators, 2 registers for b; 28
	// independent FMAs per step hide the 4-cycle FMA latency on two pipes
	// with room to spare.
	mrAVX512 = 14
	nvAVX512 = 2
	// AVX2: 6 rows × 2 ymm = 12 accumulators, 2 for b, 1 broadcast.
	mrAVX2 = 6
	nvAVX2 = 2
	// Steps of p per loop iteration.
	unroll = 4
	// Independent FMA chains in the peak loop: more than latency × pipes
	// (4 × 2 on current cores).
	peakChains = 12
)

const signature = "func(kc int, a, b, c []float32, ldc int, alpha, beta float32, rows, cols int)"

func main() {
	flag.Parse()
	ConstraintExpr("!purego")
	if *peak {
		peakFMA("peakFMAAVX512", 16, peakChains)
		peakFMA("peakFMAAVX2", 8, peakChains)
	} else {
		kernelAVX512(fmt.Sprintf("sgemmKernel%dx%dAVX512", mrAVX512, 16*nvAVX512), mrAVX512, nvAVX512)
		kernelAVX512("sgemmKernel6x64AVX512", 6, 4)
		kernelAVX512("sgemmKernel12x32AVX512", 12, 2)
		kernelAVX512("sgemmKernel8x48AVX512", 8, 3)
		kernelAVX2(fmt.Sprintf("sgemmKernel%dx%dAVX2", mrAVX2, 8*nvAVX2), mrAVX2, nvAVX2)
	}
	Generate()
}

// kernelDoc is the doc comment shared by the micro-kernels.
func kernelDoc(name string, mr, nr int, isa string) {
	Doc(
		fmt.Sprintf("%s computes one %d×%d tile of C with %s:", name, mr, nr, isa),
		"",
		"\tfor r := range rows {",
		"\t\tfor j := range cols {",
		"\t\t\tvar s float32",
		"\t\t\tfor p := range kc {",
		fmt.Sprintf("\t\t\t\ts += a[p*%d+r] * b[p*%d+j]", mr, nr),
		"\t\t\t}",
		"\t\t\tif beta == 0 {",
		"\t\t\t\tc[r*ldc+j] = alpha * s",
		"\t\t\t} else {",
		"\t\t\t\tc[r*ldc+j] = alpha*s + beta*c[r*ldc+j]",
		"\t\t\t}",
		"\t\t}",
		"\t}",
		"",
		fmt.Sprintf("a holds kc×%d and b kc×%d floats; 1 <= rows <= %d, 1 <= cols <= %d.", mr, nr, mr, nr),
	)
	Pragma("noescape")
}

// kernelAVX512 emits an mr × 16·nv micro-kernel.
func kernelAVX512(name string, mr, nv int) {
	nr := 16 * nv
	TEXT(name, NOSPLIT, signature)
	kernelDoc(name, mr, nr, "AVX-512")

	kc := Load(Param("kc"), GP64())
	pa := Mem{Base: Load(Param("a").Base(), GP64())}
	pb := Mem{Base: Load(Param("b").Base(), GP64())}

	acc := make([][]VecVirtual, mr)
	for r := range acc {
		acc[r] = make([]VecVirtual, nv)
		for v := range acc[r] {
			acc[r][v] = ZMM()
			VPXORD(acc[r][v], acc[r][v], acc[r][v])
		}
	}
	bv := make([]VecVirtual, nv)
	for v := range bv {
		bv[v] = ZMM()
	}
	step := func(u int) {
		for v := range nv {
			VMOVUPS(pb.Offset(4*(u*nr+16*v)), bv[v])
		}
		for r := range mr {
			for v := range nv {
				VFMADD231PS_BCST(pa.Offset(4*(u*mr+r)), bv[v], acc[r][v])
			}
		}
	}
	kLoop(name, kc, pa, pb, mr, nr, step)

	Comment("C = alpha·acc (+ beta·C), rows and columns masked to the valid part.")
	cols := Load(Param("cols"), GP64())
	ones := GP64()
	MOVQ(I32(-1), ones)
	bits := GP64()
	BZHIQ(cols, ones, bits)
	masks := make([]OpmaskVirtual, nv)
	for v := range nv {
		masks[v] = K()
		KMOVW(bits.As32(), masks[v])
		if v+1 < nv {
			SHRQ(U8(16), bits)
		}
	}
	alpha := ZMM()
	VBROADCASTSS(paramAddr("alpha"), alpha)
	for r := range mr {
		for v := range nv {
			VMULPS(alpha, acc[r][v], acc[r][v])
		}
	}
	pc := Mem{Base: Load(Param("c").Base(), GP64())}
	ldc := Load(Param("ldc"), GP64())
	SHLQ(U8(2), ldc)
	rows := Load(Param("rows"), GP64())
	betaBits := GP32()
	MOVL(paramAddr("beta"), betaBits)
	SHLL(U8(1), betaBits) // drop the sign: -0 counts as 0
	JZ(LabelRef(name + "_beta0"))

	beta := ZMM()
	VBROADCASTSS(paramAddr("beta"), beta)
	t := ZMM()
	storeRows(name+"_done", rows, pc, ldc, mr, func(r int) {
		for v := range nv {
			VMOVUPS_Z(pc.Offset(64*v), masks[v], t)
			VFMADD231PS(t, beta, acc[r][v])
			VMOVUPS(acc[r][v], masks[v], pc.Offset(64*v))
		}
	})
	Label(name + "_beta0")
	storeRows(name+"_done", rows, pc, ldc, mr, func(r int) {
		for v := range nv {
			VMOVUPS(acc[r][v], masks[v], pc.Offset(64*v))
		}
	})
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// kernelAVX2 emits an mr × 8·nv micro-kernel.
func kernelAVX2(name string, mr, nv int) {
	nr := 8 * nv
	TEXT(name, NOSPLIT, signature)
	kernelDoc(name, mr, nr, "AVX2 and FMA")

	kc := Load(Param("kc"), GP64())
	pa := Mem{Base: Load(Param("a").Base(), GP64())}
	pb := Mem{Base: Load(Param("b").Base(), GP64())}

	acc := make([][]VecVirtual, mr)
	for r := range acc {
		acc[r] = make([]VecVirtual, nv)
		for v := range acc[r] {
			acc[r][v] = YMM()
			VXORPS(acc[r][v], acc[r][v], acc[r][v])
		}
	}
	bv := make([]VecVirtual, nv)
	for v := range bv {
		bv[v] = YMM()
	}
	av := YMM()
	step := func(u int) {
		for v := range nv {
			VMOVUPS(pb.Offset(4*(u*nr+8*v)), bv[v])
		}
		for r := range mr {
			VBROADCASTSS(pa.Offset(4*(u*mr+r)), av)
			for v := range nv {
				VFMADD231PS(bv[v], av, acc[r][v])
			}
		}
	}
	kLoop(name, kc, pa, pb, mr, nr, step)

	Comment("C = alpha·acc (+ beta·C), rows and columns masked to the valid part.")
	alpha := YMM()
	VBROADCASTSS(paramAddr("alpha"), alpha)
	for r := range mr {
		for v := range nv {
			VMULPS(alpha, acc[r][v], acc[r][v])
		}
	}
	pc := Mem{Base: Load(Param("c").Base(), GP64())}
	ldc := Load(Param("ldc"), GP64())
	SHLQ(U8(2), ldc)
	rows := Load(Param("rows"), GP64())
	cols := Load(Param("cols"), GP64())
	betaBits := GP32()
	MOVL(paramAddr("beta"), betaBits)
	SHLL(U8(1), betaBits) // drop the sign: -0 counts as 0
	beta := YMM()
	VBROADCASTSS(paramAddr("beta"), beta)
	t := YMM()

	// Full-width tiles store with plain moves; edge tiles load a lane mask
	// per vector from maskTable (8 × -1 then 8 × 0).
	CMPQ(cols, U32(nr))
	JNE(LabelRef(name + "_edge"))
	TESTL(betaBits, betaBits)
	JZ(LabelRef(name + "_full_beta0"))
	storeRows(name+"_done", rows, pc, ldc, mr, func(r int) {
		for v := range nv {
			VFMADD231PS(pc.Offset(32*v), beta, acc[r][v])
			VMOVUPS(acc[r][v], pc.Offset(32*v))
		}
	})
	Label(name + "_full_beta0")
	storeRows(name+"_done", rows, pc, ldc, mr, func(r int) {
		for v := range nv {
			VMOVUPS(acc[r][v], pc.Offset(32*v))
		}
	})

	Label(name + "_edge")
	table := GP64()
	LEAQ(maskTable(), table)
	masks := make([]VecVirtual, nv)
	for v := range nv {
		// lanes = clamp(cols-8v, 0, 8); mask = maskTable[8-lanes : 16-lanes]
		lanes := GP64()
		MOVQ(cols, lanes)
		if v > 0 {
			SUBQ(U32(8*v), lanes)
		}
		zero := GP64()
		XORQ(zero, zero)
		CMPQ(lanes, zero)
		CMOVQLT(zero, lanes)
		eight := GP64()
		MOVQ(U32(8), eight)
		CMPQ(lanes, eight)
		CMOVQGT(eight, lanes)
		NEGQ(lanes)
		masks[v] = YMM()
		VMOVDQU(Mem{Base: table, Index: lanes, Scale: 4, Disp: 32}, masks[v])
	}
	TESTL(betaBits, betaBits)
	JZ(LabelRef(name + "_edge_beta0"))
	storeRows(name+"_done", rows, pc, ldc, mr, func(r int) {
		for v := range nv {
			VMASKMOVPS(pc.Offset(32*v), masks[v], t)
			VFMADD231PS(t, beta, acc[r][v])
			VMASKMOVPS(acc[r][v], masks[v], pc.Offset(32*v))
		}
	})
	Label(name + "_edge_beta0")
	storeRows(name+"_done", rows, pc, ldc, mr, func(r int) {
		for v := range nv {
			VMASKMOVPS(acc[r][v], masks[v], pc.Offset(32*v))
		}
	})
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

var maskTableMem *Mem

// maskTable is 8 int32 -1 followed by 8 zeros: the 8 words starting at
// index 8-n enable the first n lanes.
func maskTable() Mem {
	if maskTableMem == nil {
		m := GLOBL("sgemmMaskTable", RODATA|NOPTR)
		for i := range 16 {
			v := uint32(0)
			if i < 8 {
				v = 0xffffffff
			}
			DATA(4*i, U32(v))
		}
		maskTableMem = &m
	}
	return *maskTableMem
}

// kLoop runs step(u) for every p in [0, kc), unroll steps per iteration,
// advancing the panel pointers.
func kLoop(name string, kc Register, pa, pb Mem, mr, nr int, step func(u int)) {
	main, tail, done := name+"_kloop", name+"_ktail", name+"_kdone"
	Label(main)
	CMPQ(kc, U32(unroll))
	JL(LabelRef(tail))
	for u := range unroll {
		step(u)
	}
	ADDQ(U32(4*unroll*mr), pa.Base)
	ADDQ(U32(4*unroll*nr), pb.Base)
	SUBQ(U32(unroll), kc)
	JMP(LabelRef(main))
	Label(tail)
	TESTQ(kc, kc)
	JZ(LabelRef(done))
	step(0)
	ADDQ(U32(4*mr), pa.Base)
	ADDQ(U32(4*nr), pb.Base)
	DECQ(kc)
	JMP(LabelRef(tail))
	Label(done)
}

// storeRows emits store(r) for r = 0, 1, ... while r < rows, advancing the
// C pointer by ldc bytes between rows, then jumps to done.
func storeRows(done string, rows Register, pc Mem, ldc Register, mr int, store func(r int)) {
	for r := range mr {
		if r > 0 {
			CMPQ(rows, U32(r))
			JLE(LabelRef(done))
			ADDQ(ldc, pc.Base)
		}
		store(r)
	}
	JMP(LabelRef(done))
}

// paramAddr is the stack address of a scalar parameter of the active
// function (for broadcasts straight from memory).
func paramAddr(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}

// peakFMA emits a loop of independent FMA chains on registers only: the
// machine's FMA throughput with no memory traffic.
func peakFMA(name string, lanes, chains int) {
	TEXT(name, NOSPLIT, "func(iterations int)")
	Doc(
		fmt.Sprintf("%s runs iterations × %d independent %d-lane FMAs (%d flops each) on", name, chains, lanes, 2*lanes),
		"registers only, to measure the machine's FMA throughput. iterations >= 1.",
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
		VFMADD231PS(x, y, acc[i])
	}
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}
