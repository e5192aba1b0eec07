package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The matrix–vector kernels under kernels.Sgemv: a row of C from one row
// of A and a matrix B read in place, without packing. Both work on groups
// of independent accumulators, eight at most (latency 4 × two FMA pipes),
// then four, two and one for what is left, and every element of C goes
// through the same arithmetic whichever group holds it: a caller may cut C
// anywhere (threads) without changing a bit.

// gemvGroups are the group sizes, largest first.
var gemvGroups = []int{8, 4, 2, 1}

// genGemvAcc writes gemvAccF32: c += a·B for B's rows as stored, the
// accumulators a block of c held in registers while B's rows stream past,
// one FMA an element of B in row order, so each element of c is summed in
// the same order on every ISA.
func genGemvAcc(t *target) {
	name := "gemvAccF32" + t.suffix
	TEXT(name, NOSPLIT, "func(c, a, b []float32, ldb int)")
	Doc(
		name+" adds to c the rows of b, ldb apart, scaled by the elements of a,",
		"one FMA (rounded once) each, in row order:",
		"",
		"\tfor p := range a {",
		"\t\tfor j := range c {",
		"\t\t\tc[j] = fma(a[p], b[p*ldb+j], c[j])",
		"\t\t}",
		"\t}",
	)
	Pragma("noescape")
	c, n, a, k, b, ld := GP64(), GP64(), GP64(), GP64(), GP64(), GP64()
	Load(Param("c").Base(), c)
	Load(Param("c").Len(), n)
	Load(Param("a").Base(), a)
	Load(Param("a").Len(), k)
	Load(Param("b").Base(), b)
	Load(Param("ldb"), ld)
	SHLQ(Imm(2), ld) // bytes

	// rows runs the p loop around body, which adds row p (at pb) times
	// a[p] (broadcast in s) to the accumulators.
	rows := func(label string, body func(pb GPVirtual, s VecVirtual)) {
		pa, pb, r := GP64(), GP64(), GP64()
		MOVQ(a, pa)
		MOVQ(b, pb)
		MOVQ(k, r)
		TESTQ(r, r)
		JZ(LabelRef(label + "_rowsdone"))
		Label(label + "_row")
		s := t.vec()
		VBROADCASTSS(Mem{Base: pa}, s)
		body(pb, s)
		ADDQ(Imm(4), pa)
		ADDQ(ld, pb)
		DECQ(r)
		JNZ(LabelRef(label + "_row"))
		Label(label + "_rowsdone")
	}
	for _, vecs := range gemvGroups {
		label := fmt.Sprintf("%s_block%d", name, vecs)
		Label(label)
		CMPQ(n, U32(vecs*t.lanes))
		JL(LabelRef(label + "_done"))
		acc := make([]VecVirtual, vecs)
		for v := range acc {
			acc[v] = t.vec()
			VMOVUPS(Mem{Base: c, Disp: v * t.vbytes()}, acc[v])
		}
		rows(label, func(pb GPVirtual, s VecVirtual) {
			for v := range acc {
				VFMADD231PS(Mem{Base: pb, Disp: v * t.vbytes()}, s, acc[v])
			}
		})
		for v := range acc {
			VMOVUPS(acc[v], Mem{Base: c, Disp: v * t.vbytes()})
		}
		ADDQ(U32(vecs*t.vbytes()), c)
		ADDQ(U32(vecs*t.vbytes()), b)
		SUBQ(U32(vecs*t.lanes), n)
		JMP(LabelRef(label))
		Label(label + "_done")
	}
	// Fewer than a vector's lanes left: masked loads and stores.
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	m := gemvTailMask(t, n)
	acc := m.load(Mem{Base: c})
	rows(name+"_tail", func(pb GPVirtual, s VecVirtual) {
		VFMADD231PS(m.load(Mem{Base: pb}), s, acc)
	})
	m.store(acc, Mem{Base: c})
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// genGemvDot writes gemvDotF32: c[j] is the dot product of x with row j of
// B, each row's one accumulator summing its vectors in order and its lanes
// by halves, rows taken eight at a time so that their FMA chains overlap.
func genGemvDot(t *target) {
	name := "gemvDotF32" + t.suffix
	TEXT(name, NOSPLIT, "func(c, x, b []float32, ldb int)")
	Doc(
		name+" sets c[j] to the dot product of x and row j of b (ldb apart),",
		fmt.Sprintf("summed lane-wise over %d lanes in index order, then the lanes by halves:", t.lanes),
		"",
		"\tfor j := range c {",
		"\t\tc[j] = dot(x, b[j*ldb:][:len(x)])",
		"\t}",
	)
	Pragma("noescape")
	c, n, x, k, b, ld := GP64(), GP64(), GP64(), GP64(), GP64(), GP64()
	Load(Param("c").Base(), c)
	Load(Param("c").Len(), n)
	Load(Param("x").Base(), x)
	Load(Param("x").Len(), k)
	Load(Param("b").Base(), b)
	Load(Param("ldb"), ld)
	SHLQ(Imm(2), ld) // bytes
	ld3 := GP64()
	LEAQ(Mem{Base: ld, Index: ld, Scale: 2}, ld3)
	vecs := GP64() // whole vectors a row
	MOVQ(k, vecs)
	SHRQ(U8(log2(t.lanes)), vecs)
	ANDQ(U32(t.lanes-1), k) // lanes in the last, partial vector
	m := gemvTailMask(t, k)

	for _, rows := range gemvGroups {
		label := fmt.Sprintf("%s_rows%d", name, rows)
		Label(label)
		CMPQ(n, U32(rows))
		JL(LabelRef(label + "_done"))
		// Row r at r0 + (0, ld, 2ld, 3ld), rows 4 to 7 likewise from r4.
		r0, px, v := GP64(), GP64(), GP64()
		MOVQ(b, r0)
		var r4 GPVirtual
		if rows > 4 {
			r4 = GP64()
			LEAQ(Mem{Base: b, Index: ld, Scale: 4}, r4)
		}
		row := func(r int) Mem {
			base := r0
			if r >= 4 {
				base = r4
			}
			switch r % 4 {
			case 0:
				return Mem{Base: base}
			case 3:
				return Mem{Base: base, Index: ld3, Scale: 1}
			}
			return Mem{Base: base, Index: ld, Scale: uint8(r % 4)}
		}
		acc := make([]VecVirtual, rows)
		for r := range acc {
			acc[r] = t.vec()
			VXORPS(acc[r], acc[r], acc[r])
		}
		MOVQ(x, px)
		MOVQ(vecs, v)
		TESTQ(v, v)
		JZ(LabelRef(label + "_tail"))
		Label(label + "_vector")
		xv := t.vec()
		VMOVUPS(Mem{Base: px}, xv)
		for r := range acc {
			VFMADD231PS(row(r), xv, acc[r])
		}
		ADDQ(U32(t.vbytes()), px)
		ADDQ(U32(t.vbytes()), r0)
		if rows > 4 {
			ADDQ(U32(t.vbytes()), r4)
		}
		DECQ(v)
		JNZ(LabelRef(label + "_vector"))
		Label(label + "_tail")
		TESTQ(k, k)
		JZ(LabelRef(label + "_reduce"))
		xt := m.load(Mem{Base: px})
		for r := range acc {
			VFMADD231PS(m.load(row(r)), xt, acc[r])
		}
		Label(label + "_reduce")
		for r := range acc {
			VMOVSS(reduce(t, accSum, acc[r:r+1]), Mem{Base: c, Disp: 4 * r})
		}
		ADDQ(U32(4*rows), c)
		SUBQ(U32(rows), n)
		if rows == 1 {
			ADDQ(ld, b)
		} else {
			step := GP64()
			MOVQ(ld, step)
			SHLQ(U8(log2(rows)), step)
			ADDQ(step, b)
		}
		JMP(LabelRef(label))
		Label(label + "_done")
	}
	VZEROUPPER()
	RET()
}

// gemvMask is the first lanes of a vector, for masked loads (zero in the
// lanes left out) and stores: an opmask register on AVX-512, an all-ones
// lane vector on AVX2.
type gemvMask struct {
	t   *target
	k   OpmaskVirtual
	vec VecVirtual
}

// gemvTailMask makes the mask of the first n lanes (n < lanes).
func gemvTailMask(t *target, n GPVirtual) gemvMask {
	m := gemvMask{t: t}
	if t.avx512 {
		bits := GP32()
		MOVL(U32(0xffffffff), bits)
		BZHIL(n.As32(), bits, bits)
		m.k = K()
		KMOVW(bits, m.k)
		return m
	}
	base, off := GP64(), GP64()
	LEAQ(tailMaskTab(), base)
	MOVQ(U32(8), off)
	SUBQ(n, off)
	m.vec = YMM()
	VMOVUPS(Mem{Base: base, Index: off, Scale: 4}, m.vec)
	return m
}

func (m gemvMask) load(src Mem) VecVirtual {
	v := m.t.vec()
	if m.t.avx512 {
		VMOVUPS_Z(src, m.k, v)
	} else {
		VMASKMOVPS(src, m.vec, v)
	}
	return v
}

func (m gemvMask) store(v VecVirtual, dst Mem) {
	if m.t.avx512 {
		VMOVUPS(v, m.k, dst)
	} else {
		VMASKMOVPS(v, m.vec, dst)
	}
}

func log2(n int) int {
	l := 0
	for ; n > 1; n >>= 1 {
		l++
	}
	return l
}
