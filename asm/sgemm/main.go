// Command sgemm generates dstune's SGEMM micro-kernels (kernels/sgemm_amd64.s)
// and, with -peak, the FMA-peak loops (kernels/peak_fma_amd64.s) with avo.
//
//	go run ./sgemm -out ../kernels/sgemm_amd64.s -stubs ../kernels/sgemm_stubs_amd64.go -pkg kernels
//	go run ./sgemm -peak -out ../kernels/peak_fma_amd64.s -stubs ../kernels/peak_fma_stubs_amd64.go -pkg kernels
//
// A micro-kernel computes MR×NR tiles of C from packed panels, one tile per
// panel of A against one panel of B:
//
//	a: panels of kc×MR floats, a[t*kc*MR + p*MR + r] = op(A)(i+t*MR+r, p)
//	b: kc×NR floats,           b[p*NR + j] = op(B)(p, j0+j)
//
// It keeps the whole tile in vector registers (rows of C along the vector
// lanes), so each step p costs NR/W vector loads of b, MR broadcasts of a and
// MR·NR/W FMAs with no other memory traffic. Looping over the panels of A in
// assembly keeps the Go call overhead to one call per panel of B. Only the
// valid rows×cols are stored; the rest of the tile comes from zero padding
// in the panels. Columns past cols are masked off on load and store, so edge
// tiles run the same loop as full ones.
//
// The packers copy blocks of A and B into those panels: transposing ones
// (16×16 or 8×8 register transposes) where the panel interleaves rows of
// the source, copying ones where it takes consecutive floats.
package main

import (
	"flag"
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

var peak = flag.Bool("peak", false, "generate the FMA-peak loops instead of the SGEMM kernels")

// Micro-tile shapes and packer widths. These must agree with
// kernels/sgemm_amd64.go.
const (
	// AVX-512: 14 rows × 2 zmm = 28 accumulators, 2 registers for b and 2
	// for broadcasts of a (all 32). 28 independent FMAs per step hide the
	// 4-cycle FMA latency on two pipes. Broadcasting a into a register
	// once per row (rather than an embedded-broadcast memory operand per
	// FMA) halves the loads per step; on Zen 5 that took the kernel from
	// about 90% to about 98% of the FMA peak.
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
		Generate()
		return
	}
	kernelAVX512(fmt.Sprintf("sgemmKernel%dx%dAVX512", mrAVX512, 16*nvAVX512), mrAVX512, nvAVX512)
	kernelAVX2(fmt.Sprintf("sgemmKernel%dx%dAVX2", mrAVX2, 8*nvAVX2), mrAVX2, nvAVX2)
	for _, w := range []int{mrAVX512, 16 * nvAVX512} {
		packTransAVX512(fmt.Sprintf("sgemmPackT%dAVX512", w), w)
		packCopyAVX512(fmt.Sprintf("sgemmPackC%dAVX512", w), w)
	}
	for _, w := range []int{mrAVX2, 8 * nvAVX2} {
		packTransAVX2(fmt.Sprintf("sgemmPackT%dAVX2", w), w)
		packCopyAVX2(fmt.Sprintf("sgemmPackC%dAVX2", w), w)
	}
	Generate()
}

// kernelDoc is the doc comment shared by the micro-kernels.
func kernelDoc(name string, mr, nr int, isa string) {
	Doc(
		fmt.Sprintf("%s computes rows×cols of C, %d×%d tiles at a time, with %s:", name, mr, nr, isa),
		"",
		"\tfor r := range rows {",
		fmt.Sprintf("\t\tpanel := a[r/%d*kc*%d:]", mr, mr),
		"\t\tfor j := range cols {",
		"\t\t\tvar s float32",
		"\t\t\tfor p := range kc {",
		fmt.Sprintf("\t\t\t\ts += panel[p*%d+r%%%d] * b[p*%d+j]", mr, mr, nr),
		"\t\t\t}",
		"\t\t\tif beta == 0 {",
		"\t\t\t\tc[r*ldc+j] = alpha * s",
		"\t\t\t} else {",
		"\t\t\t\tc[r*ldc+j] = alpha*s + beta*c[r*ldc+j]",
		"\t\t\t}",
		"\t\t}",
		"\t}",
		"",
		fmt.Sprintf("a holds ⌈rows/%d⌉ packed panels of kc×%d floats, b one of kc×%d;", mr, mr, nr),
		fmt.Sprintf("kc >= 1, rows >= 1, 1 <= cols <= %d. Panel rows past rows are zero.", nr),
	)
	Pragma("noescape")
}

// kernelRegs are the general-purpose registers of a kernel's tile loop.
type kernelRegs struct {
	pa, bBase, cTile, ldc, rowsLeft, tileStride Register
}

// kernelProlog loads the pointers and sizes the tile loop uses.
func kernelProlog(mr int) kernelRegs {
	k := kernelRegs{
		pa:       Load(Param("a").Base(), GP64()),
		bBase:    Load(Param("b").Base(), GP64()),
		cTile:    Load(Param("c").Base(), GP64()),
		ldc:      Load(Param("ldc"), GP64()),
		rowsLeft: Load(Param("rows"), GP64()),
	}
	SHLQ(U8(2), k.ldc)
	k.tileStride = GP64()
	IMUL3Q(U32(mr), k.ldc, k.tileStride)
	return k
}

// nextTile emits the end of the tile loop: done when this tile held the
// last rows, else on to the next mr rows of C (a's pointer already stands
// at the next panel).
func nextTile(name string, k kernelRegs, mr int) {
	Label(name + "_nexttile")
	CMPQ(k.rowsLeft, U32(mr))
	JLE(LabelRef(name + "_done"))
	SUBQ(U32(mr), k.rowsLeft)
	ADDQ(k.tileStride, k.cTile)
	JMP(LabelRef(name + "_tile"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// kernelAVX512 emits an mr × 16·nv kernel.
func kernelAVX512(name string, mr, nv int) {
	nr := 16 * nv
	TEXT(name, NOSPLIT, signature)
	kernelDoc(name, mr, nr, "AVX-512")
	k := kernelProlog(mr)

	Comment("Column masks: the first cols lanes of the row.")
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

	Label(name + "_tile")
	prefetchC(k.cTile, k.ldc, mr, 4*nr)
	acc := make([][]VecVirtual, mr)
	for r := range acc {
		acc[r] = make([]VecVirtual, nv)
		for v := range acc[r] {
			acc[r][v] = ZMM()
			VPXORD(acc[r][v], acc[r][v], acc[r][v])
		}
	}
	pa := Mem{Base: k.pa}
	pb := Mem{Base: GP64()}
	MOVQ(k.bBase, pb.Base)
	kc := Load(Param("kc"), GP64())
	bv := make([]VecVirtual, nv)
	for v := range bv {
		bv[v] = ZMM()
	}
	av := []VecVirtual{ZMM(), ZMM()}
	kLoop(name, kc, pa, pb, mr, nr, func(u int) {
		for v := range nv {
			VMOVUPS(pb.Offset(4*(u*nr+16*v)), bv[v])
		}
		for r := range mr {
			VBROADCASTSS(pa.Offset(4*(u*mr+r)), av[r%2])
			for v := range nv {
				VFMADD231PS(av[r%2], bv[v], acc[r][v])
			}
		}
	})

	Comment("C = alpha·acc (+ beta·C), rows and columns masked to the valid part.")
	alpha := ZMM()
	VBROADCASTSS(paramAddr("alpha"), alpha)
	for r := range mr {
		for v := range nv {
			VMULPS(alpha, acc[r][v], acc[r][v])
		}
	}
	pc := Mem{Base: GP64()}
	MOVQ(k.cTile, pc.Base)
	betaBits := GP32()
	MOVL(paramAddr("beta"), betaBits)
	SHLL(U8(1), betaBits) // drop the sign: -0 counts as 0
	JZ(LabelRef(name + "_beta0"))
	beta, t := ZMM(), ZMM()
	VBROADCASTSS(paramAddr("beta"), beta)
	storeRows(name, k.rowsLeft, pc, k.ldc, mr, func(r int) {
		for v := range nv {
			VMOVUPS_Z(pc.Offset(64*v), masks[v], t)
			VFMADD231PS(t, beta, acc[r][v])
			VMOVUPS(acc[r][v], masks[v], pc.Offset(64*v))
		}
	})
	Label(name + "_beta0")
	storeRows(name, k.rowsLeft, pc, k.ldc, mr, func(r int) {
		for v := range nv {
			VMOVUPS(acc[r][v], masks[v], pc.Offset(64*v))
		}
	})
	nextTile(name, k, mr)
}

// kernelAVX2 emits an mr × 8·nv kernel.
func kernelAVX2(name string, mr, nv int) {
	nr := 8 * nv
	TEXT(name, NOSPLIT, signature)
	kernelDoc(name, mr, nr, "AVX2 and FMA")
	k := kernelProlog(mr)
	cols, maskAddr := avx2ColumnMasks(nv)

	Label(name + "_tile")
	prefetchC(k.cTile, k.ldc, mr, 4*nr)
	acc := avx2Accumulate(name, k, mr, nv)
	avx2Store(name, k, mr, nv, cols, maskAddr, acc)
	nextTile(name, k, mr)
}

// avx2ColumnMasks loads cols and the address of each vector's lane mask
// for edge tiles (full-width tiles store with plain moves; edge tiles load
// a lane mask per vector from maskTable, 8 × -1 then 8 × 0).
func avx2ColumnMasks(nv int) (cols GPVirtual, maskAddr []Register) {
	Comment("Column masks for edge tiles: the first cols lanes of the row.")
	cols = Load(Param("cols"), GP64()).(GPVirtual)
	table := GP64()
	LEAQ(maskTable(), table)
	maskAddr = make([]Register, nv)
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
		maskAddr[v] = GP64()
		LEAQ(Mem{Base: table, Index: lanes, Scale: 4, Disp: 32}, maskAddr[v])
	}
	return cols, maskAddr
}

// avx2Accumulate clears the mr × nv accumulators and runs the k loop:
// per k, nv vectors of B and a broadcast of each row's A, fused
// multiply-added.
func avx2Accumulate(name string, k kernelRegs, mr, nv int) [][]VecVirtual {
	nr := 8 * nv
	acc := make([][]VecVirtual, mr)
	for r := range acc {
		acc[r] = make([]VecVirtual, nv)
		for v := range acc[r] {
			acc[r][v] = YMM()
			VXORPS(acc[r][v], acc[r][v], acc[r][v])
		}
	}
	pa := Mem{Base: k.pa}
	pb := Mem{Base: GP64()}
	MOVQ(k.bBase, pb.Base)
	kc := Load(Param("kc"), GP64())
	bv := make([]VecVirtual, nv)
	for v := range bv {
		bv[v] = YMM()
	}
	av := YMM()
	kLoop(name, kc, pa, pb, mr, nr, func(u int) {
		for v := range nv {
			VMOVUPS(pb.Offset(4*(u*nr+8*v)), bv[v])
		}
		for r := range mr {
			VBROADCASTSS(pa.Offset(4*(u*mr+r)), av)
			for v := range nv {
				VFMADD231PS(bv[v], av, acc[r][v])
			}
		}
	})
	return acc
}

// avx2Store writes C = alpha·acc (+ beta·C), with plain moves for a full
// tile and lane masks for an edge tile, each with and without beta.
func avx2Store(name string, k kernelRegs, mr, nv int, cols GPVirtual, maskAddr []Register, acc [][]VecVirtual) {
	nr := 8 * nv
	Comment("C = alpha·acc (+ beta·C), rows and columns masked to the valid part.")
	alpha := YMM()
	VBROADCASTSS(paramAddr("alpha"), alpha)
	for r := range mr {
		for v := range nv {
			VMULPS(alpha, acc[r][v], acc[r][v])
		}
	}
	pc := Mem{Base: GP64()}
	MOVQ(k.cTile, pc.Base)
	betaBits := GP32()
	MOVL(paramAddr("beta"), betaBits)
	SHLL(U8(1), betaBits) // drop the sign: -0 counts as 0
	beta, t := YMM(), YMM()
	VBROADCASTSS(paramAddr("beta"), beta)
	CMPQ(cols, U32(nr))
	JNE(LabelRef(name + "_edge"))
	TESTL(betaBits, betaBits)
	JZ(LabelRef(name + "_full_beta0"))
	storeRows(name, k.rowsLeft, pc, k.ldc, mr, func(r int) {
		for v := range nv {
			VFMADD231PS(pc.Offset(32*v), beta, acc[r][v])
			VMOVUPS(acc[r][v], pc.Offset(32*v))
		}
	})
	Label(name + "_full_beta0")
	storeRows(name, k.rowsLeft, pc, k.ldc, mr, func(r int) {
		for v := range nv {
			VMOVUPS(acc[r][v], pc.Offset(32*v))
		}
	})

	Label(name + "_edge")
	masks := make([]VecVirtual, nv)
	for v := range nv {
		masks[v] = YMM()
		VMOVDQU(Mem{Base: maskAddr[v]}, masks[v])
	}
	TESTL(betaBits, betaBits)
	JZ(LabelRef(name + "_edge_beta0"))
	storeRows(name, k.rowsLeft, pc, k.ldc, mr, func(r int) {
		for v := range nv {
			VMASKMOVPS(pc.Offset(32*v), masks[v], t)
			VFMADD231PS(t, beta, acc[r][v])
			VMASKMOVPS(acc[r][v], masks[v], pc.Offset(32*v))
		}
	})
	Label(name + "_edge_beta0")
	storeRows(name, k.rowsLeft, pc, k.ldc, mr, func(r int) {
		for v := range nv {
			VMASKMOVPS(acc[r][v], masks[v], pc.Offset(32*v))
		}
	})
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

// prefetchC asks for the tile of C (mr rows of rowBytes at stride ldc
// bytes from c) at the start of a tile, so that the k loop hides the
// latency of its load and store at the end: C is often far out of cache
// (it is swept once per block of the inner dimension). Prefetches never
// fault, so rows past the valid ones may be touched harmlessly.
func prefetchC(c, ldc Register, mr, rowBytes int) {
	Comment("Prefetch the C tile.")
	row := GP64()
	MOVQ(c, row)
	for r := range mr {
		if r > 0 {
			ADDQ(ldc, row)
		}
		for off := 0; off < rowBytes; off += 64 {
			PREFETCHT0(Mem{Base: row, Disp: off})
		}
		PREFETCHT0(Mem{Base: row, Disp: rowBytes - 4})
	}
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
// C pointer by ldc bytes between rows. Running out of rows means this was
// the last tile (done); after a full tile it goes on to the next.
func storeRows(name string, rows Register, pc Mem, ldc Register, mr int, store func(r int)) {
	for r := range mr {
		if r > 0 {
			CMPQ(rows, U32(r))
			JLE(LabelRef(name + "_done"))
			ADDQ(ldc, pc.Base)
		}
		store(r)
	}
	JMP(LabelRef(name + "_nexttile"))
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

const packSignature = "func(dst, src []float32, ld, kc int)"

// packTransDoc is the doc comment of a transposing packer.
func packTransDoc(name string, w, step int) {
	Doc(
		fmt.Sprintf("%s packs %d rows of src (stride ld) into a panel with the rows", name, w),
		"interleaved:",
		"",
		"\tfor p := range kc {",
		fmt.Sprintf("\t\tfor r := range %d {", w),
		fmt.Sprintf("\t\t\tdst[p*%d+r] = src[r*ld+p]", w),
		"\t\t}",
		"\t}",
		"",
		fmt.Sprintf("kc is a multiple of %d.", step),
	)
	Pragma("noescape")
}

// packCopyDoc is the doc comment of a copying packer.
func packCopyDoc(name string, w int) {
	Doc(
		fmt.Sprintf("%s packs %d columns of src (stride ld) into a panel:", name, w),
		"",
		"\tfor p := range kc {",
		fmt.Sprintf("\t\tcopy(dst[p*%d:p*%d+%d], src[p*ld:p*ld+%d])", w, w, w, w),
		"\t}",
	)
	Pragma("noescape")
}

// transpose4InLanes transposes the 4×4 blocks of rows a, b, c, d within
// each 128-bit lane: afterwards out[j] lane L holds a, b, c, d at column
// 4L+j.
func transpose4InLanes(rows []VecVirtual, mk func() VecVirtual) []VecVirtual {
	t := []VecVirtual{mk(), mk(), mk(), mk()}
	VUNPCKLPS(rows[1], rows[0], t[0]) // a0 b0 a1 b1
	VUNPCKHPS(rows[1], rows[0], t[1]) // a2 b2 a3 b3
	VUNPCKLPS(rows[3], rows[2], t[2]) // c0 d0 c1 d1
	VUNPCKHPS(rows[3], rows[2], t[3]) // c2 d2 c3 d3
	out := []VecVirtual{rows[0], rows[1], rows[2], rows[3]}
	VUNPCKLPD(t[2], t[0], out[0]) // a0 b0 c0 d0
	VUNPCKHPD(t[2], t[0], out[1]) // a1 b1 c1 d1
	VUNPCKLPD(t[3], t[1], out[2]) // a2 b2 c2 d2
	VUNPCKHPD(t[3], t[1], out[3]) // a3 b3 c3 d3
	return out
}

// transpose16 transposes 16 zmm rows of 16 floats in place: afterwards
// rows[q] holds column q.
func transpose16(rows []VecVirtual) {
	var u [4][]VecVirtual // u[g][j]: group g's rows at column 4L+j in lane L
	for g := range 4 {
		u[g] = transpose4InLanes(rows[4*g:4*g+4], ZMM)
	}
	for j := range 4 {
		v0, v1, v2, v3 := ZMM(), ZMM(), ZMM(), ZMM()
		VSHUFF32X4(U8(0x44), u[1][j], u[0][j], v0) // u0.L0 u0.L1 u1.L0 u1.L1
		VSHUFF32X4(U8(0xEE), u[1][j], u[0][j], v1) // u0.L2 u0.L3 u1.L2 u1.L3
		VSHUFF32X4(U8(0x44), u[3][j], u[2][j], v2) // u2.L0 u2.L1 u3.L0 u3.L1
		VSHUFF32X4(U8(0xEE), u[3][j], u[2][j], v3) // u2.L2 u2.L3 u3.L2 u3.L3
		VSHUFF32X4(U8(0x88), v2, v0, rows[j])      // column j
		VSHUFF32X4(U8(0xDD), v2, v0, rows[4+j])    // column 4+j
		VSHUFF32X4(U8(0x88), v3, v1, rows[8+j])    // column 8+j
		VSHUFF32X4(U8(0xDD), v3, v1, rows[12+j])   // column 12+j
	}
}

// transpose8 transposes 8 ymm rows of 8 floats in place.
func transpose8(rows []VecVirtual) {
	u0 := transpose4InLanes(rows[0:4], YMM)
	u1 := transpose4InLanes(rows[4:8], YMM)
	for j := range 4 {
		lo, hi := YMM(), YMM()
		VPERM2F128(U8(0x20), u1[j], u0[j], lo) // column j
		VPERM2F128(U8(0x31), u1[j], u0[j], hi) // column 4+j
		rows[j], rows[4+j] = lo, hi
	}
}

// packTransAVX512 emits a packer for w rows (w <= 16 or a multiple of 16),
// 16 columns of src a step: load 16 rows, transpose, store w lanes a column.
func packTransAVX512(name string, w int) {
	TEXT(name, NOSPLIT, packSignature)
	packTransDoc(name, w, 16)
	d := Mem{Base: Load(Param("dst").Base(), GP64())}
	src := Load(Param("src").Base(), GP64())
	ld := Load(Param("ld"), GP64())
	SHLQ(U8(2), ld)
	kc := Load(Param("kc"), GP64())
	var mask OpmaskVirtual
	if w%16 != 0 {
		mask = K()
		bits := GP64()
		MOVQ(U32(1<<w-1), bits)
		KMOVW(bits.As32(), mask)
	}
	row := GP64()
	Label(name + "_loop")
	TESTQ(kc, kc)
	JZ(LabelRef(name + "_done"))
	MOVQ(src, row)
	for g := 0; g < w; g += 16 {
		rows := make([]VecVirtual, 16)
		for r := range rows {
			rows[r] = ZMM()
			if g+r < w {
				VMOVUPS(Mem{Base: row}, rows[r])
				ADDQ(ld, row)
			} else {
				VPXORD(rows[r], rows[r], rows[r])
			}
		}
		transpose16(rows)
		for q := range 16 {
			if w%16 != 0 {
				VMOVUPS(rows[q], mask, d.Offset(4*(q*w+g)))
			} else {
				VMOVUPS(rows[q], d.Offset(4*(q*w+g)))
			}
		}
	}
	ADDQ(U32(64), src)
	ADDQ(U32(4*16*w), d.Base)
	SUBQ(U32(16), kc)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// packTransAVX2 emits a packer for w rows (w <= 8 or a multiple of 8), 8
// columns of src a step.
func packTransAVX2(name string, w int) {
	TEXT(name, NOSPLIT, packSignature)
	packTransDoc(name, w, 8)
	d := Mem{Base: Load(Param("dst").Base(), GP64())}
	src := Load(Param("src").Base(), GP64())
	ld := Load(Param("ld"), GP64())
	SHLQ(U8(2), ld)
	kc := Load(Param("kc"), GP64())
	row := GP64()
	Label(name + "_loop")
	TESTQ(kc, kc)
	JZ(LabelRef(name + "_done"))
	MOVQ(src, row)
	for g := 0; g < w; g += 8 {
		rows := make([]VecVirtual, 8)
		for r := range rows {
			rows[r] = YMM()
			if g+r < w {
				VMOVUPS(Mem{Base: row}, rows[r])
				ADDQ(ld, row)
			} else {
				VXORPS(rows[r], rows[r], rows[r])
			}
		}
		transpose8(rows)
		for q := range 8 {
			at := d.Offset(4 * (q*w + g))
			switch {
			case w%8 == 0:
				VMOVUPS(rows[q], at)
			case w == 6:
				// 4 + 2 lanes, so nothing past the column is written.
				VMOVUPS(rows[q].AsX(), at)
				hi := XMM()
				VEXTRACTF128(U8(1), rows[q], hi)
				VMOVLPS(hi, at.Offset(16))
			default:
				panic("packTransAVX2: unsupported width")
			}
		}
	}
	ADDQ(U32(32), src)
	ADDQ(U32(4*8*w), d.Base)
	SUBQ(U32(8), kc)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// packCopyAVX512 emits a copying packer for w columns (w <= 16 or a
// multiple of 16).
func packCopyAVX512(name string, w int) {
	TEXT(name, NOSPLIT, packSignature)
	packCopyDoc(name, w)
	d := Mem{Base: Load(Param("dst").Base(), GP64())}
	s := Mem{Base: Load(Param("src").Base(), GP64())}
	ld := Load(Param("ld"), GP64())
	SHLQ(U8(2), ld)
	kc := Load(Param("kc"), GP64())
	var mask OpmaskVirtual
	if w%16 != 0 {
		mask = K()
		bits := GP64()
		MOVQ(U32(1<<w-1), bits)
		KMOVW(bits.As32(), mask)
	}
	Label(name + "_loop")
	TESTQ(kc, kc)
	JZ(LabelRef(name + "_done"))
	for g := 0; g < w; g += 16 {
		z := ZMM()
		if w%16 != 0 {
			VMOVUPS_Z(s.Offset(4*g), mask, z)
			VMOVUPS(z, mask, d.Offset(4*g))
		} else {
			VMOVUPS(s.Offset(4*g), z)
			VMOVUPS(z, d.Offset(4*g))
		}
	}
	ADDQ(ld, s.Base)
	ADDQ(U32(4*w), d.Base)
	DECQ(kc)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// packCopyAVX2 emits a copying packer for w columns (6 or a multiple of 8).
func packCopyAVX2(name string, w int) {
	TEXT(name, NOSPLIT, packSignature)
	packCopyDoc(name, w)
	d := Mem{Base: Load(Param("dst").Base(), GP64())}
	s := Mem{Base: Load(Param("src").Base(), GP64())}
	ld := Load(Param("ld"), GP64())
	SHLQ(U8(2), ld)
	kc := Load(Param("kc"), GP64())
	Label(name + "_loop")
	TESTQ(kc, kc)
	JZ(LabelRef(name + "_done"))
	switch {
	case w%8 == 0:
		for g := 0; g < w; g += 8 {
			y := YMM()
			VMOVUPS(s.Offset(4*g), y)
			VMOVUPS(y, d.Offset(4*g))
		}
	case w == 6:
		x, t := XMM(), GP64()
		VMOVUPS(s, x)
		VMOVUPS(x, d)
		MOVQ(s.Offset(16), t)
		MOVQ(t, d.Offset(16))
	default:
		panic("packCopyAVX2: unsupported width")
	}
	ADDQ(ld, s.Base)
	ADDQ(U32(4*w), d.Base)
	DECQ(kc)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}
