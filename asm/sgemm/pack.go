package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

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

// transpose16 transposes 16 zmm rows of 16 32-bit words in place:
// afterwards rows[q] holds column q.
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

// blockLoop emits the loops of a blocked packer: over rows in steps of
// rowStep (outer) and cols in steps of colStep (inner). block(s, d) handles
// the block whose source starts at s and destination at d; after each
// block s and d advance by srcCol and dstCol bytes, after each row of
// blocks the row starts advance by srcRow and dstRow.
func blockLoop(name string, rowStep, colStep int, src, dst Register, srcRow, dstRow, srcCol, dstCol Op, block func(s, d Register)) {
	rows := Load(Param("rows"), GP64())
	Label(name + "_rows")
	TESTQ(rows, rows)
	JZ(LabelRef(name + "_done"))
	cols := Load(Param("cols"), GP64())
	s, d := GP64(), GP64()
	MOVQ(src, s)
	MOVQ(dst, d)
	Label(name + "_cols")
	TESTQ(cols, cols)
	JZ(LabelRef(name + "_nextrow"))
	block(s, d)
	ADDQ(srcCol, s)
	ADDQ(dstCol, d)
	SUBQ(U32(colStep), cols)
	JMP(LabelRef(name + "_cols"))
	Label(name + "_nextrow")
	ADDQ(srcRow, src)
	ADDQ(dstRow, dst)
	SUBQ(U32(rowStep), rows)
	JMP(LabelRef(name + "_rows"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// loadStrides loads a strided packer's pointers and its strides in bytes.
func loadStrides() (dst, ldd, src, lds Register) {
	dst = Load(Param("dst").Base(), GP64())
	src = Load(Param("src").Base(), GP64())
	ldd = Load(Param("ldd"), GP64())
	lds = Load(Param("lds"), GP64())
	SHLQ(U8(2), ldd)
	SHLQ(U8(2), lds)
	return
}

// scaled returns a new register holding r·n.
func scaled(r Register, n int) Register {
	out := GP64()
	IMUL3Q(U32(n), r, out)
	return out
}

const stridedSignature = "func(dst []%s, ldd int, src []float32, lds int, rows, cols int)"

// stridedDoc is the doc comment of a strided packer: its loop and the
// multiples its sizes must be.
func stridedDoc(name, what string, loop []string, multiples string) {
	lines := []string{name + " " + what + ":", ""}
	for _, l := range loop {
		lines = append(lines, "\t"+l)
	}
	Doc(append(lines, "", multiples)...)
	Pragma("noescape")
}

// loadRows loads n vectors from p, p+stride, ..., advancing a copy of p.
func loadRows(p, stride Register, vecs []VecVirtual) {
	row := GP64()
	MOVQ(p, row)
	for i, v := range vecs {
		if i > 0 {
			ADDQ(stride, row)
		}
		VMOVUPS(Mem{Base: row}, v)
	}
}

// storeRows stores vecs to p, p+stride, ...
func storeRows(p, stride Register, vecs []VecVirtual) {
	row := GP64()
	MOVQ(p, row)
	for i, v := range vecs {
		if i > 0 {
			ADDQ(stride, row)
		}
		VMOVUPS(v, Mem{Base: row})
	}
}

func zmms(n int) []VecVirtual {
	v := make([]VecVirtual, n)
	for i := range v {
		v[i] = ZMM()
	}
	return v
}

func ymms(n int) []VecVirtual {
	v := make([]VecVirtual, n)
	for i := range v {
		v[i] = YMM()
	}
	return v
}

// transposeAVX512 emits the transposer of 32-bit words (float32, or
// bfloat16 pairs: elem), 16×16 blocks.
func transposeAVX512(name, elem string) {
	TEXT(name, NOSPLIT, fmt.Sprintf("func(dst []%s, ldd int, src []%s, lds int, rows, cols int)", elem, elem))
	stridedDoc(name, "transposes rows×cols of src into dst", []string{
		"for i := range rows {",
		"\tfor j := range cols {",
		"\t\tdst[j*ldd+i] = src[i*lds+j]",
		"\t}",
		"}",
	}, "rows and cols are multiples of 16.")
	dst, ldd, src, lds := loadStrides()
	blockLoop(name, 16, 16, src, dst, scaled(lds, 16), U32(64), U32(64), scaled(ldd, 16), func(s, d Register) {
		transposeBlock16(s, lds, d, ldd, func(row Mem) VecVirtual {
			v := ZMM()
			VMOVUPS(row, v)
			return v
		})
	})
}

// transposeBlock16 transposes a block of 16 rows of 16 words: row r is
// load of the memory at s + r·lds, column q goes to d + q·ldd.
func transposeBlock16(s, lds, d, ldd Register, load func(row Mem) VecVirtual) {
	v := make([]VecVirtual, 16)
	p := GP64()
	MOVQ(s, p)
	for r := range v {
		if r > 0 {
			ADDQ(lds, p)
		}
		v[r] = load(Mem{Base: p})
	}
	transpose16(v)
	storeRows(d, ldd, v)
}

// transposeAVX2 emits the float32 transposer, 8×8 blocks.
func transposeAVX2(name string) {
	TEXT(name, NOSPLIT, fmt.Sprintf(stridedSignature, "float32"))
	stridedDoc(name, "transposes rows×cols of src into dst", []string{
		"for i := range rows {",
		"\tfor j := range cols {",
		"\t\tdst[j*ldd+i] = src[i*lds+j]",
		"\t}",
		"}",
	}, "rows and cols are multiples of 8.")
	dst, ldd, src, lds := loadStrides()
	blockLoop(name, 8, 8, src, dst, scaled(lds, 8), U32(32), U32(32), scaled(ldd, 8), func(s, d Register) {
		v := ymms(8)
		loadRows(s, lds, v)
		transpose8(v)
		storeRows(d, ldd, v)
	})
}

const packSignature = "func(dst, src []float32, ld, kc int)"

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

// packCopyAVX512 emits a copying packer for w columns (a multiple of 16).
func packCopyAVX512(name string, w int) {
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
	for g := 0; g < w; g += 16 {
		z := ZMM()
		VMOVUPS(s.Offset(4*g), z)
		VMOVUPS(z, d.Offset(4*g))
	}
	ADDQ(ld, s.Base)
	ADDQ(U32(4*w), d.Base)
	DECQ(kc)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// packCopyAVX2 emits a copying packer for w columns (a multiple of 8).
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
	for g := 0; g < w; g += 8 {
		y := YMM()
		VMOVUPS(s.Offset(4*g), y)
		VMOVUPS(y, d.Offset(4*g))
	}
	ADDQ(ld, s.Base)
	ADDQ(U32(4*w), d.Base)
	DECQ(kc)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// The bfloat16 packers. A pair holds two bfloat16 values, the lower inner
// index in the low half: bf16Pair(x, y) = bf16(x) | bf16(y)<<16, each
// rounded to nearest even by VCVTNE2PS2BF16 (which also flushes denormals
// to zero and quiets NaNs, as kernels/sbgemm.go's bf16Round does).

var pairIndexMem *Mem

// pairIndex is the VPERMW index that interleaves the words of a register
// holding x0..x15 in words 0..15 and y0..y15 in words 16..31 into pairs
// (x0, y0), (x1, y1), ...
func pairIndex() Mem {
	if pairIndexMem == nil {
		m := GLOBL("sbgemmPairIndex", RODATA|NOPTR)
		for j := range 16 {
			DATA(4*j, U16(j))
			DATA(4*j+2, U16(16+j))
		}
		pairIndexMem = &m
	}
	return *pairIndexMem
}

// pairs converts 16 floats at x and 16 at y into their 16 pairs.
func pairs(x, y Mem, idx VecVirtual) VecVirtual {
	vx, vy, t, out := ZMM(), ZMM(), ZMM(), ZMM()
	VMOVUPS(x, vx)
	VMOVUPS(y, vy)
	VCVTNE2PS2BF16(vx, vy, t)
	VPERMW(t, idx, out)
	return out
}

// converted converts the 32 consecutive floats at x into their 16 pairs.
func converted(x Mem) VecVirtual {
	lo, hi, out := ZMM(), ZMM(), ZMM()
	VMOVUPS(x, lo)
	VMOVUPS(x.Offset(64), hi)
	VCVTNE2PS2BF16(lo, hi, out)
	return out
}

// packCvtBF16 emits the packer of row-major rows into pairs along the row.
func packCvtBF16(name string) {
	TEXT(name, NOSPLIT, fmt.Sprintf(stridedSignature, "uint32"))
	stridedDoc(name, "converts rows of src into bfloat16 pairs", []string{
		"for i := range rows {",
		"\tfor q := range cols {",
		"\t\tdst[i*ldd+q] = bf16Pair(src[i*lds+2*q], src[i*lds+2*q+1])",
		"\t}",
		"}",
	}, "cols is a multiple of 16.")
	dst, ldd, src, lds := loadStrides()
	blockLoop(name, 1, 16, src, dst, lds, ldd, U32(128), U32(64), func(s, d Register) {
		// The source rows come from memory: ask for the ones four rows on.
		PREFETCHT0(Mem{Base: s, Index: lds, Scale: 4})
		PREFETCHT0(Mem{Base: s, Index: lds, Scale: 4, Disp: 64})
		VMOVUPS(converted(Mem{Base: s}), Mem{Base: d})
	})
}

// packCvtTransBF16 emits the converting transposer: rows of src
// converted into pairs along the row, the pairs transposed into dst, 16
// rows × 16 pairs a block, without the round trip through a buffer that
// converting and transposing apart takes. It reads 16 rows side by side,
// so callers keep it from strides that put them all in a few L1 sets.
func packCvtTransBF16(name string) {
	TEXT(name, NOSPLIT, fmt.Sprintf(stridedSignature, "uint32"))
	stridedDoc(name, "converts rows of src into bfloat16 pairs and transposes them", []string{
		"for i := range rows {",
		"\tfor q := range cols {",
		"\t\tdst[q*ldd+i] = bf16Pair(src[i*lds+2*q], src[i*lds+2*q+1])",
		"\t}",
		"}",
	}, "rows and cols are multiples of 16.")
	dst, ldd, src, lds := loadStrides()
	blockLoop(name, 16, 16, src, dst, scaled(lds, 16), U32(64), U32(128), scaled(ldd, 16), func(s, d Register) {
		transposeBlock16(s, lds, d, ldd, converted)
	})
}

// packPairBF16 emits the packer of pairs of rows into pairs across them.
func packPairBF16(name string) {
	TEXT(name, NOSPLIT, fmt.Sprintf(stridedSignature, "uint32"))
	stridedDoc(name, "interleaves pairs of rows of src into bfloat16 pairs", []string{
		"for q := range rows {",
		"\tfor j := range cols {",
		"\t\tdst[q*ldd+j] = bf16Pair(src[2*q*lds+j], src[(2*q+1)*lds+j])",
		"\t}",
		"}",
	}, "cols is a multiple of 16.")
	dst, ldd, src, lds := loadStrides()
	idx := ZMM()
	VMOVDQU64(pairIndex(), idx)
	blockLoop(name, 1, 16, src, dst, scaled(lds, 2), ldd, U32(64), U32(64), func(s, d Register) {
		// The source rows come from memory: ask for the pair four rows on.
		ahead := GP64()
		LEAQ(Mem{Base: s, Index: lds, Scale: 4}, ahead)
		PREFETCHT0(Mem{Base: ahead})
		PREFETCHT0(Mem{Base: ahead, Index: lds, Scale: 1})
		VMOVUPS(pairs(Mem{Base: s}, Mem{Base: s, Index: lds, Scale: 1}, idx), Mem{Base: d})
	})
}
