package main

import (
	"fmt"

	"github.com/dstune/dstune/asm/internal/frame"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// kernelSignature is the Go signature of a micro-kernel; bfloat16 kernels
// take their operands as pairs packed in uint32.
func kernelSignature(bf bool) string {
	elem := "float32"
	if bf {
		elem = "uint32"
	}
	return fmt.Sprintf("func(kc int, a []%s, lda int, b []%s, c []float32, ldc int, alpha, beta float32, rows, cols int, pf uintptr, pfRows, pfRowLines, pfSkip int)", elem, elem)
}

// kernelDoc is the doc comment shared by the micro-kernels.
func kernelDoc(name string, mr, nr int, isa string, bf bool) {
	step := fmt.Sprintf("\t\t\t\ts += a[r*lda+p] * b[p*%d+j]", nr)
	what := "floats"
	if bf {
		step = fmt.Sprintf("\t\t\t\ts = bf16Dot(s, a[r*lda+p], b[p*%d+j])", nr)
		what = "bfloat16 pairs"
	}
	Doc(
		fmt.Sprintf("%s computes rows×cols of C, %d×%d tiles at a time, with %s:", name, mr, nr, isa),
		"",
		"\tfor r := range rows {",
		"\t\tfor j := range cols {",
		"\t\t\tvar s float32",
		"\t\t\tfor p := range kc {",
		step,
		"\t\t\t}",
		"\t\t\tif beta == 0 {",
		"\t\t\t\tc[r*ldc+j] = alpha * s",
		"\t\t\t} else {",
		"\t\t\t\tc[r*ldc+j] = fma32(beta, c[r*ldc+j], alpha*s)",
		"\t\t\t}",
		"\t\t}",
		"\t}",
		"",
		fmt.Sprintf("a holds rows rows of kc %s (row r at a[r*lda:]), b a packed panel", what),
		fmt.Sprintf("of kc×%d; kc >= 1, rows >= 1, 1 <= cols <= %d. Panel columns past cols are", nr, nr),
		"zero. The last rows%"+fmt.Sprint(mr)+" rows run code for exactly that many rows.",
		"",
		"Along the way the kernel prefetches into L2, a few lines per step of its",
		"inner loop, pfRows rows of pfRowLines cache lines from address pf, each",
		"row pfSkip bytes after the end of the previous one: operands its caller",
		"needs next. That is a hint only; the memory is not read.",
	)
	Pragma("noescape")
}

// kernelArgs are the general-purpose registers live across a kernel's
// tiles.
type kernelArgs struct {
	aTile, lda, lda3, cTile, ldc, rowsLeft Register
	pf, pfRows, pfLine                     Register // the lines left to prefetch
}

// loadKernelArgs loads the pointers and strides (in bytes) of a kernel.
func loadKernelArgs() kernelArgs {
	k := kernelArgs{
		aTile:    Load(Param("a").Base(), GP64()),
		lda:      Load(Param("lda"), GP64()),
		cTile:    Load(Param("c").Base(), GP64()),
		ldc:      Load(Param("ldc"), GP64()),
		rowsLeft: Load(Param("rows"), GP64()),
	}
	SHLQ(U8(2), k.lda)
	SHLQ(U8(2), k.ldc)
	k.lda3 = GP64()
	LEAQ(Mem{Base: k.lda, Index: k.lda, Scale: 2}, k.lda3)
	k.pf = Load(Param("pf"), GP64())
	k.pfRows = Load(Param("pfRows"), GP64())
	k.pfLine = Load(Param("pfRowLines"), GP64())
	return k
}

// prefetchStep prefetches the next line of the caller's prefetch rows, if
// any are left, moving on to the next row at the end of one.
func prefetchStep(label string, k kernelArgs) {
	TESTQ(k.pfRows, k.pfRows)
	JZ(LabelRef(label))
	PREFETCHT1(Mem{Base: k.pf})
	ADDQ(U32(64), k.pf)
	DECQ(k.pfLine)
	JNZ(LabelRef(label))
	DECQ(k.pfRows)
	ADDQ(frame.Param("pfSkip"), k.pf)
	MOVQ(frame.Param("pfRowLines"), k.pfLine)
	Label(label)
}

// tiles emits the loop over tiles: full tiles of mr rows while at least mr
// rows are left, then the code for exactly the rows left (1 to mr-1).
// body(prefix, rows) emits one tile.
//
// A tile of fewer than minRows rows has too few independent accumulator
// chains to keep the FMA units busy (its steps wait on the latency of the
// one before), so a last tile that small is not left alone: when mr+t rows
// are left with 0 < t < minRows, they run as two tiles of about half each
// (16 rows of a 14-row kernel as 8+8, not 14+2). Every element of C is
// summed in the same order whichever tile holds it, so the split changes
// no bits.
func tiles(name string, k kernelArgs, mr, minRows int, body func(prefix string, rows int)) {
	done := name + "_done"
	// next moves on past a tile of rows rows, or finishes when none are left.
	next := func(rows int) {
		SUBQ(U32(rows), k.rowsLeft)
		JZ(LabelRef(done))
		t := GP64()
		IMUL3Q(U32(rows), k.ldc, t)
		ADDQ(t, k.cTile)
		IMUL3Q(U32(rows), k.lda, t)
		ADDQ(t, k.aTile)
		JMP(LabelRef(name + "_tile"))
	}
	rowsLabel := func(r int) string { return fmt.Sprintf("%s_rows%d", name, r) }

	Label(name + "_tile")
	CMPQ(k.rowsLeft, U32(mr))
	JL(LabelRef(name + "_tail"))
	if minRows > 1 {
		Comment("mr+t rows left with a t too small for a tile of its own: split them.")
		// The halves: (mr+t+1)/2 then (mr+t)/2 rows, both fewer than mr
		// (the second may still be under minRows: 7 rows of a 6-row kernel
		// run as 4+3, better than 6+1).
		for t := 1; t < minRows && (mr+t+1)/2 < mr; t++ {
			CMPQ(k.rowsLeft, U32(mr+t))
			JE(LabelRef(rowsLabel((mr + t + 1) / 2)))
		}
	}
	body(name+"_full", mr)
	next(mr)

	Comment("The last tile: code for exactly the rows left.")
	Label(name + "_tail")
	for r := 1; r < mr; r++ {
		CMPQ(k.rowsLeft, U32(r))
		JE(LabelRef(rowsLabel(r)))
	}
	JMP(LabelRef(done))
	for r := 1; r < mr; r++ {
		Label(rowsLabel(r))
		body(rowsLabel(r), r)
		next(r)
	}
	Label(done)
	VZEROUPPER()
	RET()
}

// rowPointers holds pointers to rows 0, 5, 10, ... of the tile of A and
// addresses the rows between them with the stride registers.
type rowPointers struct {
	base      []Register
	lda, lda3 Register
}

func newRowPointers(k kernelArgs, rows int) rowPointers {
	rp := rowPointers{lda: k.lda, lda3: k.lda3}
	prev := k.aTile
	for g := 0; g*5 < rows; g++ {
		b := GP64()
		if g == 0 {
			MOVQ(k.aTile, b)
		} else {
			LEAQ(Mem{Base: prev, Index: k.lda, Scale: 4}, b)
			ADDQ(k.lda, b)
		}
		rp.base = append(rp.base, b)
		prev = b
	}
	return rp
}

// row is the address of row r of the tile, disp bytes in.
func (rp rowPointers) row(r, disp int) Mem {
	b := rp.base[r/5]
	switch r % 5 {
	case 1:
		return Mem{Base: b, Index: rp.lda, Scale: 1, Disp: disp}
	case 2:
		return Mem{Base: b, Index: rp.lda, Scale: 2, Disp: disp}
	case 3:
		return Mem{Base: b, Index: rp.lda3, Scale: 1, Disp: disp}
	case 4:
		return Mem{Base: b, Index: rp.lda, Scale: 4, Disp: disp}
	}
	return Mem{Base: b, Disp: disp}
}

func (rp rowPointers) advance(bytes int) {
	for _, b := range rp.base {
		ADDQ(U32(bytes), b)
	}
}

// kLoop runs step(u) for every p in [0, kc), unroll steps per iteration,
// advancing the row pointers of A and the panel pointer of B; each
// iteration also prefetches pfPerIter lines of the caller's prefetch
// range, while any are left.
func kLoop(prefix string, k kernelArgs, kc Register, rp rowPointers, pb Register, nr, pfPerIter int, step func(u int)) {
	main, tail, done := prefix+"_kloop", prefix+"_ktail", prefix+"_kdone"
	Label(main)
	CMPQ(kc, U32(unroll))
	JL(LabelRef(tail))
	for u := range unroll {
		step(u)
		if u < pfPerIter {
			prefetchStep(fmt.Sprintf("%s_pf%d", prefix, u), k)
		}
	}
	rp.advance(4 * unroll)
	ADDQ(U32(4*unroll*nr), pb)
	SUBQ(U32(unroll), kc)
	JMP(LabelRef(main))
	Label(tail)
	TESTQ(kc, kc)
	JZ(LabelRef(done))
	step(0)
	rp.advance(4)
	ADDQ(U32(4*nr), pb)
	DECQ(kc)
	JMP(LabelRef(tail))
	Label(done)
}

// prefetchC asks for mr rows of C (rowBytes each, at stride ldc bytes),
// from row skip on, into L2: the next tile, at the start of each, so that
// the k loop hides the latency of the loads and stores at its end. C is
// often far out of cache (it is swept once per block of the inner
// dimension, and large ones stay in memory). Prefetching into L1 instead
// measured slower: when ldc is a multiple of 1 KiB the tile's rows share a
// few L1 sets, where early C lines evict the panel of B. Prefetches never
// fault, so the masked-off part of a row, or rows past the last tile, may
// be touched harmlessly.
func prefetchC(c, ldc Register, skip, mr, rowBytes int) {
	Comment("Prefetch the next tile of C into L2.")
	row := GP64()
	MOVQ(c, row)
	for r := range skip + mr {
		if r > 0 {
			ADDQ(ldc, row)
		}
		if r < skip {
			continue
		}
		for off := 0; off < rowBytes; off += 64 {
			PREFETCHT1(Mem{Base: row, Disp: off})
		}
		PREFETCHT1(Mem{Base: row, Disp: rowBytes - 4})
	}
}

// scaleByAlpha multiplies the accumulators by alpha unless it is 1 (which
// leaves every value, NaN included, as it is).
func scaleByAlpha(prefix string, acc [][]VecVirtual, mk func() VecVirtual) {
	bits := GP32()
	MOVL(frame.Param("alpha"), bits)
	CMPL(bits, U32(0x3f800000))
	JE(LabelRef(prefix + "_alpha1"))
	alpha := mk()
	VBROADCASTSS(frame.Param("alpha"), alpha)
	for r := range acc {
		for v := range acc[r] {
			VMULPS(alpha, acc[r][v], acc[r][v])
		}
	}
	Label(prefix + "_alpha1")
}

// betaIsZero sets the zero flag when beta is ±0 (C is then not read).
func betaIsZero() {
	bits := GP32()
	MOVL(frame.Param("beta"), bits)
	SHLL(U8(1), bits) // drop the sign: -0 counts as 0
}

// storeTile emits store(r) for every row of the tile, advancing pc by ldc
// between rows.
func storeTile(rows int, pc, ldc Register, store func(r int)) {
	for r := range rows {
		if r > 0 {
			ADDQ(ldc, pc)
		}
		store(r)
	}
}

// kernelAVX512 emits an mr × 16·nv AVX-512 kernel: float32 FMAs, or with
// bf VDPBF16PS on bfloat16 pairs.
func kernelAVX512(name string, mr, nv int, bf bool) {
	nr := 16 * nv
	TEXT(name, NOSPLIT, kernelSignature(bf))
	isa := "AVX-512"
	if bf {
		isa = "AVX512_BF16"
	}
	kernelDoc(name, mr, nr, isa, bf)
	k := loadKernelArgs()
	// A bfloat16 step covers two inner indices: prefetch twice as fast.
	pfPerIter := 2
	if bf {
		pfPerIter = unroll
	}

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

	prefetchC(k.cTile, k.ldc, 0, mr, 4*nr)
	// VDPBF16PS has a longer latency than an FMA: more chains to hide it.
	chains := fmaChains
	if bf {
		chains = bf16Chains
	}
	tiles(name, k, mr, (chains+nv-1)/nv, func(prefix string, rows int) {
		if rows == mr {
			prefetchC(k.cTile, k.ldc, mr, mr, 4*nr)
		}
		acc := make([][]VecVirtual, rows)
		for r := range acc {
			acc[r] = make([]VecVirtual, nv)
			for v := range acc[r] {
				acc[r][v] = ZMM()
				// VXORPS, unlike VPXORD, is known to avo as a zero idiom, so
				// acc is not live before it.
				VXORPS(acc[r][v], acc[r][v], acc[r][v])
			}
		}
		rp := newRowPointers(k, rows)
		pb := Load(Param("b").Base(), GP64())
		kc := Load(Param("kc"), GP64())
		bv := make([]VecVirtual, nv)
		for v := range bv {
			bv[v] = ZMM()
		}
		av := []VecVirtual{ZMM(), ZMM()}
		kLoop(prefix, k, kc, rp, pb, nr, pfPerIter, func(u int) {
			for v := range nv {
				VMOVUPS(Mem{Base: pb, Disp: 4 * (u*nr + 16*v)}, bv[v])
			}
			for r := range rows {
				if bf {
					VPBROADCASTD(rp.row(r, 4*u), av[r%2])
				} else {
					VBROADCASTSS(rp.row(r, 4*u), av[r%2])
				}
				for v := range nv {
					if bf {
						VDPBF16PS(bv[v], av[r%2], acc[r][v])
					} else {
						VFMADD231PS(av[r%2], bv[v], acc[r][v])
					}
				}
			}
		})

		Comment("C = alpha·acc (+ beta·C), columns masked to the valid part.")
		scaleByAlpha(prefix, acc, func() VecVirtual { return ZMM() })
		pc := GP64()
		MOVQ(k.cTile, pc)
		betaIsZero()
		JZ(LabelRef(prefix + "_beta0"))
		// All of the tile's loads of C (as FMA operands, lanes past cols
		// masked off: they neither fault nor change acc) before any of its
		// stores: with ldc a multiple of 4 KiB, a load after a store to
		// the row above looks like it depends on it.
		beta := ZMM()
		VBROADCASTSS(frame.Param("beta"), beta)
		storeTile(rows, pc, k.ldc, func(r int) {
			for v := range nv {
				VFMADD231PS(Mem{Base: pc, Disp: 64 * v}, beta, masks[v], acc[r][v])
			}
		})
		MOVQ(k.cTile, pc)
		storeTile(rows, pc, k.ldc, func(r int) {
			for v := range nv {
				VMOVUPS(acc[r][v], masks[v], Mem{Base: pc, Disp: 64 * v})
			}
		})
		JMP(LabelRef(prefix + "_stored"))
		Label(prefix + "_beta0")
		storeTile(rows, pc, k.ldc, func(r int) {
			for v := range nv {
				VMOVUPS(acc[r][v], masks[v], Mem{Base: pc, Disp: 64 * v})
			}
		})
		Label(prefix + "_stored")
	})
}

// kernelAVX2 emits an mr × 8·nv AVX2 kernel.
//
// With ftz the kernel flushes its partial sums to zero below 2⁻¹²⁶, as
// VDPBF16PS does: MXCSR's flush-to-zero bit is set while a tile sums and
// the caller's MXCSR is back before the tile is scaled and added into C
// (and on return). Sbgemm runs on this kernel where the CPU lacks
// AVX512_BF16. Go code never sees the changed MXCSR: the runtime does not
// preempt assembly, and signal handlers start with the default one.
func kernelAVX2(name string, mr, nv int, ftz bool) {
	nr := 8 * nv
	TEXT(name, NOSPLIT, kernelSignature(false))
	isa := "AVX2 and FMA"
	if ftz {
		isa += ", partial sums flushed to zero below 2⁻¹²⁶ (MXCSR.FTZ)"
	}
	kernelDoc(name, mr, nr, isa, false)
	var mxcsr, mxcsrFTZ Mem
	if ftz {
		Comment("The caller's MXCSR, and it with FTZ (bit 15) set.")
		mxcsr = AllocLocal(8)
		mxcsrFTZ = mxcsr.Offset(4)
		STMXCSR(mxcsr)
		t := GP32()
		MOVL(mxcsr, t)
		ORL(U32(1<<15), t)
		MOVL(t, mxcsrFTZ)
	}
	k := loadKernelArgs()

	prefetchC(k.cTile, k.ldc, 0, mr, 4*nr)
	tiles(name, k, mr, (fmaChains+nv-1)/nv, func(prefix string, rows int) {
		if rows == mr {
			prefetchC(k.cTile, k.ldc, mr, mr, 4*nr)
		}
		if ftz {
			LDMXCSR(mxcsrFTZ)
		}
		acc := make([][]VecVirtual, rows)
		for r := range acc {
			acc[r] = make([]VecVirtual, nv)
			for v := range acc[r] {
				acc[r][v] = YMM()
				VXORPS(acc[r][v], acc[r][v], acc[r][v])
			}
		}
		rp := newRowPointers(k, rows)
		pb := Load(Param("b").Base(), GP64())
		kc := Load(Param("kc"), GP64())
		bv := make([]VecVirtual, nv)
		for v := range bv {
			bv[v] = YMM()
		}
		av := YMM()
		kLoop(prefix, k, kc, rp, pb, nr, 2, func(u int) {
			for v := range nv {
				VMOVUPS(Mem{Base: pb, Disp: 4 * (u*nr + 8*v)}, bv[v])
			}
			for r := range rows {
				VBROADCASTSS(rp.row(r, 4*u), av)
				for v := range nv {
					VFMADD231PS(bv[v], av, acc[r][v])
				}
			}
		})

		if ftz {
			LDMXCSR(mxcsr)
		}
		Comment("C = alpha·acc (+ beta·C), columns masked to the valid part.")
		scaleByAlpha(prefix, acc, func() VecVirtual { return YMM() })
		pc := GP64()
		MOVQ(k.cTile, pc)
		CMPQ(frame.Param("cols"), U32(nr))
		JNE(LabelRef(prefix + "_edge"))
		betaIsZero()
		JZ(LabelRef(prefix + "_full_beta0"))
		beta := YMM()
		VBROADCASTSS(frame.Param("beta"), beta)
		// The tile's loads of C before its stores (see kernelAVX512).
		storeTile(rows, pc, k.ldc, func(r int) {
			for v := range nv {
				VFMADD231PS(Mem{Base: pc, Disp: 32 * v}, beta, acc[r][v])
			}
		})
		MOVQ(k.cTile, pc)
		storeTile(rows, pc, k.ldc, func(r int) {
			for v := range nv {
				VMOVUPS(acc[r][v], Mem{Base: pc, Disp: 32 * v})
			}
		})
		JMP(LabelRef(prefix + "_stored"))
		Label(prefix + "_full_beta0")
		storeTile(rows, pc, k.ldc, func(r int) {
			for v := range nv {
				VMOVUPS(acc[r][v], Mem{Base: pc, Disp: 32 * v})
			}
		})
		JMP(LabelRef(prefix + "_stored"))

		// Edge tiles load a lane mask per vector from maskTable (8 × -1
		// then 8 × 0).
		Label(prefix + "_edge")
		masks := columnMasksAVX2(nv)
		betaIsZero()
		JZ(LabelRef(prefix + "_edge_beta0"))
		beta2, t := YMM(), YMM()
		VBROADCASTSS(frame.Param("beta"), beta2)
		storeTile(rows, pc, k.ldc, func(r int) {
			for v := range nv {
				VMASKMOVPS(Mem{Base: pc, Disp: 32 * v}, masks[v], t)
				VFMADD231PS(t, beta2, acc[r][v])
			}
		})
		MOVQ(k.cTile, pc)
		storeTile(rows, pc, k.ldc, func(r int) {
			for v := range nv {
				VMASKMOVPS(acc[r][v], masks[v], Mem{Base: pc, Disp: 32 * v})
			}
		})
		JMP(LabelRef(prefix + "_stored"))
		Label(prefix + "_edge_beta0")
		storeTile(rows, pc, k.ldc, func(r int) {
			for v := range nv {
				VMASKMOVPS(acc[r][v], masks[v], Mem{Base: pc, Disp: 32 * v})
			}
		})
		Label(prefix + "_stored")
	})
}

// columnMasksAVX2 loads, for each of the nv vectors of a row, the lane mask
// enabling its first clamp(cols-8v, 0, 8) lanes.
func columnMasksAVX2(nv int) []VecVirtual {
	Comment("Column masks for edge tiles: the first cols lanes of the row.")
	table := GP64()
	LEAQ(maskTable(), table)
	masks := make([]VecVirtual, nv)
	for v := range nv {
		// lanes = clamp(cols-8v, 0, 8); mask = maskTable[8-lanes : 16-lanes]
		lanes := Load(Param("cols"), GP64())
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
	return masks
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
