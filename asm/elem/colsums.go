package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// genColumnSums writes colSumsF64: rows of float32 added, column by column
// in row order, into float64 sums — a bias gradient's reduction over the
// batch. Each lane of a float64 vector is one column, so every column's
// additions happen in the same order as the scalar loop's and give the same
// bits. Columns go in blocks of colBlock vectors (accumulators held in
// registers while the rows stream past), then one vector at a time; the
// caller does the last len(acc) % lanes columns.
func genColumnSums(t *target) {
	name := "colSumsF64" + t.suffix
	TEXT(name, NOSPLIT, "func(acc []float64, x []float32, ld int, rows int)")
	Doc(
		name+" adds rows of x, ld apart, to acc, each column's rows in order:",
		"",
		"\tfor i := range acc {",
		"\t\tfor r := range rows {",
		"\t\t\tacc[i] += float64(x[r*ld+i])",
		"\t\t}",
		"\t}",
		"",
		fmt.Sprintf("len(acc) is a multiple of %d.", t.lanes/2),
	)
	Pragma("noescape")
	dl := t.lanes / 2 // float64 lanes a vector
	acc, x, n := GP64(), GP64(), GP64()
	Load(Param("acc").Base(), acc)
	Load(Param("acc").Len(), n)
	Load(Param("x").Base(), x)
	ld, rows := GP64(), GP64()
	Load(Param("ld"), ld)
	SHLQ(Imm(2), ld) // bytes
	Load(Param("rows"), rows)

	block := func(vecs int, label string) {
		done := label + "_done"
		Label(label)
		CMPQ(n, U32(vecs*dl))
		JL(LabelRef(done))
		a := make([]VecVirtual, vecs)
		for v := range a {
			a[v] = t.vec()
			VMOVUPD(Mem{Base: acc, Disp: 8 * dl * v}, a[v])
		}
		p, r := GP64(), GP64()
		MOVQ(x, p)
		MOVQ(rows, r)
		Label(label + "_row")
		TESTQ(r, r)
		JZ(LabelRef(label + "_store"))
		for v := range a {
			c := t.vec()
			VCVTPS2PD(Mem{Base: p, Disp: 4 * dl * v}, c)
			VADDPD(c, a[v], a[v])
		}
		ADDQ(ld, p)
		DECQ(r)
		JMP(LabelRef(label + "_row"))
		Label(label + "_store")
		for v := range a {
			VMOVUPD(a[v], Mem{Base: acc, Disp: 8 * dl * v})
		}
		ADDQ(U32(8*dl*vecs), acc)
		ADDQ(U32(4*dl*vecs), x)
		SUBQ(U32(dl*vecs), n)
		JMP(LabelRef(label))
		Label(done)
	}
	block(8, name+"_block")
	block(1, name+"_one")
	VZEROUPPER()
	RET()
}
