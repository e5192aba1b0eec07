package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The helpers of Sbgemm's FMA path (kernels/sbgemm_fma.go): after the
// float32 packers have laid out a block, they round its elements to
// bfloat16 in place (kept as float32, the low 16 bits zero) and swap the
// inner indices of every pair, with AVX2 integer arithmetic.

// wideConstants are the constants of roundedBF16, broadcast.
type wideConstants struct {
	one, half, high, abs, exp, quiet, sign, zero VecVirtual
}

func loadWideConstants() wideConstants {
	bcast := func(v uint32) VecVirtual {
		g, y := GP32(), YMM()
		MOVL(U32(v), g)
		VMOVD(g, y.AsX())
		VPBROADCASTD(y.AsX(), y)
		return y
	}
	c := wideConstants{
		one: bcast(1), half: bcast(0x7fff), high: bcast(0xffff0000), abs: bcast(0x7fffffff),
		exp: bcast(0x7f800000), quiet: bcast(0x00400000), sign: bcast(0x80000000), zero: YMM(),
	}
	VPXOR(c.zero, c.zero, c.zero)
	return c
}

// roundedBF16 returns the 8 floats of x rounded to bfloat16 as
// kernels/sbgemm.go's bf16Round does (to nearest, ties to even; ±0 for
// zeros and denormals; NaNs quieted), as floats.
func roundedBF16(x VecVirtual, c wideConstants) VecVirtual {
	r, t, nan, q, z, s := YMM(), YMM(), YMM(), YMM(), YMM(), YMM()
	// r = (x + 0x7fff + (x>>16 & 1)) & 0xffff0000
	VPSRLD(U8(16), x, t)
	VPAND(c.one, t, t)
	VPADDD(c.half, t, t)
	VPADDD(x, t, r)
	VPAND(c.high, r, r)
	// NaN (|x| > 0x7f800000): x's high half with the quiet bit.
	VPAND(c.abs, x, nan)
	VPCMPGTD(c.exp, nan, nan)
	VPOR(c.quiet, x, q)
	VPAND(c.high, q, q)
	VPBLENDVB(nan, q, r, r)
	// Zero exponent (±0, denormals): the sign alone.
	VPAND(c.exp, x, z)
	VPCMPEQD(c.zero, z, z)
	VPAND(c.sign, x, s)
	VPBLENDVB(z, s, r, r)
	return r
}

// wideSwapPairs emits the rounding swap of adjacent elements (a row of
// A, copied into its packed block or in place).
func wideSwapPairs(name string) {
	TEXT(name, NOSPLIT, "func(dst, src []float32, n int)")
	Doc(
		name+" rounds src's first n elements to bfloat16 (bf16Round, kept as",
		"float32) into dst, swapped in pairs (dst may be src):",
		"",
		"\tfor q := 0; q < n; q += 2 {",
		"\t\tdst[q], dst[q+1] = roundBF16(src[q+1]), roundBF16(src[q])",
		"\t}",
		"",
		"n is a multiple of 8.",
	)
	Pragma("noescape")
	d := Load(Param("dst").Base(), GP64())
	p := Load(Param("src").Base(), GP64())
	n := Load(Param("n"), GP64())
	c := loadWideConstants()
	Label(name + "_loop")
	CMPQ(n, U32(8))
	JL(LabelRef(name + "_done"))
	x := YMM()
	VMOVUPS(Mem{Base: p}, x)
	r := roundedBF16(x, c)
	VPSHUFD(U8(0xb1), r, r) // (1, 0, 3, 2) in each lane
	VMOVUPS(r, Mem{Base: d})
	ADDQ(U32(32), p)
	ADDQ(U32(32), d)
	SUBQ(U32(8), n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// wideSwapRows emits the rounding swap of pairs of rows of 16 (a packed
// panel of B).
func wideSwapRows(name string) {
	TEXT(name, NOSPLIT, "func(x []float32, pairs int)")
	Doc(
		name+" rounds the elements of pairs pairs of rows of 16 in x to",
		"bfloat16 (bf16Round, kept as float32) and swaps the rows of each pair:",
		"",
		"\tfor q := range pairs {",
		"\t\tfor j := range 16 {",
		"\t\t\tlo, hi := &x[32*q+j], &x[32*q+16+j]",
		"\t\t\t*lo, *hi = roundBF16(*hi), roundBF16(*lo)",
		"\t\t}",
		"\t}",
	)
	Pragma("noescape")
	p := Load(Param("x").Base(), GP64())
	n := Load(Param("pairs"), GP64())
	c := loadWideConstants()
	Label(name + "_loop")
	TESTQ(n, n)
	JZ(LabelRef(name + "_done"))
	for half := range 2 {
		lo, hi := YMM(), YMM()
		VMOVUPS(Mem{Base: p, Disp: 32 * half}, lo)
		VMOVUPS(Mem{Base: p, Disp: 64 + 32*half}, hi)
		VMOVUPS(roundedBF16(hi, c), Mem{Base: p, Disp: 32 * half})
		VMOVUPS(roundedBF16(lo, c), Mem{Base: p, Disp: 64 + 32*half})
	}
	ADDQ(U32(128), p)
	DECQ(n)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}
