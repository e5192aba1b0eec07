// Command elem generates kernels/elem_amd64.s and kernels/elem_stubs_amd64.go:
// the AVX-512 and AVX2+FMA versions of dstune's element-wise and row kernels
// (vector exp/erf/tanh/sigmoid, GELU, softmax and LayerNorm row passes,
// simple vector arithmetic, and the matrix–vector kernels under Sgemv:
// gemv.go). Run it through `go generate ./kernels`.
//
// Every kernel but the column sums and gemv.go's is one loop over n
// float32 lanes: a main loop unrolled over several vectors, a one-vector
// loop, and a masked tail (AVX-512 opmask registers; AVX2 VMASKMOVPS with a
// mask loaded from a sliding table), so no kernel reads or writes outside
// its slices. Reductions keep one accumulator per unrolled vector and
// combine them, and then the lanes, in a fixed order, so a result depends
// only on the input, never on timing.
//
// The math (see mathfuncs.go) is the same on both ISAs: polynomial
// coefficients come from fit_coeffs.py in this directory.
package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/dstune/dstune/asm/internal/frame"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func main() {
	ConstraintExpr("!purego")
	for _, t := range []*target{avx512, avx2} {
		genVectorArith(t)
		genReductions(t)
		genMath(t)
		genRows(t)
		genColumnSums(t)
		genGemvAcc(t)
		genGemvDot(t)
	}
	Generate()
}

// target is one instruction-set level: its vector width and the few places
// where the instruction sequences differ.
type target struct {
	suffix string // appended to kernel names: "AVX512" or "AVX2"
	lanes  int    // float32 lanes per vector
	avx512 bool
	// maxHoist is how many constants a loop may keep in registers beyond
	// those that must be (see ctx.k); the rest stay memory operands. AVX2
	// keeps none: with 16 registers, more pressure makes avo's allocator
	// reach for Y16-Y31, which only AVX-512 can encode (TestAVX2AssemblyIsVEX
	// in kernels guards that), and hoisting a few measured no faster.
	maxHoist int
}

var (
	avx512 = &target{suffix: "AVX512", lanes: 16, avx512: true, maxHoist: 12}
	avx2   = &target{suffix: "AVX2", lanes: 8}
)

func (t *target) vec() VecVirtual {
	if t.avx512 {
		return ZMM()
	}
	return YMM()
}

func (t *target) vbytes() int { return 4 * t.lanes }

// ---------------------------------------------------------------------------
// Constants: each distinct 32-bit pattern gets one 64-byte table holding it
// sixteen times, so both ZMM and YMM code can use it as a memory operand.

var constTables = map[uint32]Mem{}

func constBits(bits uint32) Mem {
	if m, ok := constTables[bits]; ok {
		return m
	}
	m := GLOBL(fmt.Sprintf("elemconst_%08x", bits), RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(bits))
	}
	constTables[bits] = m
	return m
}

func konst(v float32) Mem { return constBits(math.Float32bits(v)) }

// tailMaskTable is eight all-ones words followed by eight zero words: the
// eight words starting at word 8-r have the first r lanes set.
var tailMaskTable *Mem

func tailMaskTab() Mem {
	if tailMaskTable == nil {
		m := GLOBL("elemtailmask", RODATA|NOPTR)
		for i := 0; i < 16; i++ {
			v := uint32(0)
			if i < 8 {
				v = 0xffffffff
			}
			DATA(4*i, U32(v))
		}
		tailMaskTable = &m
	}
	return *tailMaskTable
}

// ---------------------------------------------------------------------------
// The loop driver.

// loop describes one kernel: slices read and written lane by lane, float32
// scalars broadcast to every lane, accumulators reduced at the end, and the
// body computing one vector.
type loop struct {
	name  string
	sig   string
	doc   []string
	n     string   // the slice parameter whose length is the lane count
	ins   []string // slice parameters loaded lane by lane
	outs  []string // slice parameters stored lane by lane (may repeat an input)
	scals []string // float32 parameters broadcast to all lanes
	// maxHoist overrides the target's maxHoist for this loop.
	maxHoist map[*target]int
	// accs are the reductions: one accumulator per unrolled vector each,
	// combined and returned through the named results, in order.
	accs   []accKind
	rets   []string
	unroll map[*target]int
	body   func(c *ctx)
}

type accKind int

const (
	accSum accKind = iota
	accMax
)

// ctx is what a loop body sees for one vector.
type ctx struct {
	t    *target
	in   []VecVirtual // the loaded inputs (zero in masked-off tail lanes)
	out  []VecVirtual // set by the body
	scal []VecVirtual // broadcast scalars
	acc  []VecVirtual // this vector's accumulators
	tail *tailMask    // nil except in the masked tail

	// Constants held in registers, loaded by the prologue that emit writes
	// after the body (when the set is known), in first-use order.
	hoisted   map[uint32]VecVirtual
	hoistList []uint32
	maxHoist  int // how many k/kb may hoist; creg always does
}

type tailMask struct {
	k   OpmaskVirtual // AVX-512
	vec VecVirtual    // AVX2: all-ones in active lanes
}

// creg returns a register holding constant v in every lane, for operands
// that cannot be memory (the NaN-propagating operand of VMAXPS/VMINPS, the
// dividend of VDIVPS).
func (c *ctx) creg(v float32) VecVirtual { return c.hoist(math.Float32bits(v)) }

func (c *ctx) hoist(bits uint32) VecVirtual {
	if r, ok := c.hoisted[bits]; ok {
		return r
	}
	r := c.t.vec()
	c.hoisted[bits] = r
	c.hoistList = append(c.hoistList, bits)
	return r
}

// k returns constant v in every lane as an operand: a register while the
// loop's hoisting budget lasts, else a memory operand. AVX-512 code hoists
// (a 64-byte memory operand costs a full load slot per use, which bound
// exp to one vector per 12 cycles); AVX2 has too few registers to.
func (c *ctx) k(v float32) Op { return c.kb(math.Float32bits(v)) }

// kb is k for a 32-bit pattern. Past the hoisting budget, AVX-512 code
// broadcasts the constant's first word into a register at each use
// rather than reading all 64 bytes: the linker aligns data to 32 bytes
// at most, so a 64-byte operand straddles two cache lines in about half
// of all builds, which made the GELU kernels twice as slow in those.
func (c *ctx) kb(bits uint32) Op {
	if _, ok := c.hoisted[bits]; ok || len(c.hoisted) < c.maxHoist {
		return c.hoist(bits)
	}
	if c.t.avx512 {
		r := c.t.vec()
		VBROADCASTSS(constBits(bits), r)
		return r
	}
	return constBits(bits)
}

// accumulate folds v into accumulator i; in the tail only active lanes count.
func (c *ctx) accumulate(i int, kind accKind, v VecVirtual) {
	a := c.acc[i]
	switch {
	case c.tail == nil && kind == accSum:
		VADDPS(v, a, a)
	case c.tail == nil && kind == accMax:
		VMAXPS(v, a, a)
	case c.t.avx512 && kind == accSum:
		VADDPS(v, a, c.tail.k, a)
	case c.t.avx512 && kind == accMax:
		VMAXPS(v, a, c.tail.k, a)
	case kind == accSum:
		VANDPS(c.tail.vec, v, v)
		VADDPS(v, a, a)
	default:
		m := c.t.vec()
		VMAXPS(v, a, m)
		VBLENDVPS(c.tail.vec, m, a, a)
	}
}

func (l *loop) emit(t *target) {
	e := &emitter{l: l, t: t}
	e.header()
	e.loops()
	e.finish()
}

// emitter writes one loop's function for one target: a header that loads
// the arguments, broadcasts the scalars and clears the accumulators; the
// unrolled block loop, the one-vector loop and the masked tail; then the
// reduction of the accumulators and the prologue that loads the hoisted
// constants (written last, once the body has said which it needs).
type emitter struct {
	l      *loop
	t      *target
	unroll int
	ptrs   map[string]GPVirtual
	n, i   GPVirtual
	c      *ctx
	accs   [][]VecVirtual
	// prologue and body label the constants' prologue and the body the
	// function jumps back to.
	prologue, body string
}

func (e *emitter) header() {
	l, t := e.l, e.t
	TEXT(l.name+t.suffix, NOSPLIT, l.sig)
	for j, d := range l.doc {
		if j == 0 && strings.HasPrefix(d, l.name+" ") {
			d = l.name + t.suffix + d[len(l.name):]
		}
		Doc(d)
	}
	Pragma("noescape")
	e.unroll = l.unroll[t]
	if e.unroll == 0 {
		e.unroll = 1
	}

	e.ptrs = map[string]GPVirtual{}
	for _, name := range append(append([]string{}, l.ins...), l.outs...) {
		if _, ok := e.ptrs[name]; ok {
			continue
		}
		p := GP64()
		Load(Param(name).Base(), p)
		e.ptrs[name] = p
	}
	e.n = GP64()
	Load(Param(l.n).Len(), e.n)

	e.c = &ctx{t: t, hoisted: map[uint32]VecVirtual{}, maxHoist: t.maxHoist}
	if h, ok := l.maxHoist[t]; ok {
		e.c.maxHoist = h
	}
	for _, s := range l.scals {
		// Straight from the argument frame (see package frame).
		v := t.vec()
		VBROADCASTSS(frame.Param(s), v)
		e.c.scal = append(e.c.scal, v)
	}
	e.accs = make([][]VecVirtual, e.unroll)
	for u := range e.accs {
		for _, k := range l.accs {
			a := t.vec()
			if k == accSum {
				VXORPS(a, a, a)
			} else {
				VMOVUPS(konst(float32(math.Inf(-1))), a) // from memory: this runs before the constants prologue
			}
			e.accs[u] = append(e.accs[u], a)
		}
	}

	// The constants are loaded by a prologue at the end of the function,
	// written once the body has said which it needs.
	e.prologue, e.body = l.name+t.suffix+"_constants", l.name+t.suffix+"_start"
	JMP(LabelRef(e.prologue))
	Label(e.body)

	e.i = GP64()
	XORQ(e.i, e.i)
}

// step emits one vector of the body at unroll slot u; tail, when set,
// masks the loads and stores.
func (e *emitter) step(u int, tail *tailMask) {
	l, t, c := e.l, e.t, e.c
	mem := func(name string, off int) Mem {
		return Mem{Base: e.ptrs[name], Index: e.i, Scale: 4, Disp: off}
	}
	c.tail = tail
	c.acc = e.accs[u]
	c.in = c.in[:0]
	c.out = make([]VecVirtual, len(l.outs))
	off := u * t.vbytes()
	for _, name := range l.ins {
		v := t.vec()
		switch {
		case tail == nil:
			VMOVUPS(mem(name, off), v)
		case t.avx512:
			VMOVUPS_Z(mem(name, off), tail.k, v)
		default:
			VMASKMOVPS(mem(name, off), tail.vec, v)
		}
		c.in = append(c.in, v)
	}
	l.body(c)
	for j, name := range l.outs {
		v := c.out[j]
		switch {
		case tail == nil:
			VMOVUPS(v, mem(name, off))
		case t.avx512:
			VMOVUPS(v, tail.k, mem(name, off))
		default:
			VMASKMOVPS(v, tail.vec, mem(name, off))
		}
	}
}

// loops emits the unrolled blocks, the single vectors and the masked
// tail.
func (e *emitter) loops() {
	l, t, i, n := e.l, e.t, e.i, e.n
	block := e.unroll * t.lanes
	if e.unroll > 1 {
		limit := GP64()
		MOVQ(n, limit)
		ANDQ(I32(-block), limit)
		Label(l.name + t.suffix + "_blocks")
		CMPQ(i, limit)
		JAE(LabelRef(l.name + t.suffix + "_vectors"))
		for u := 0; u < e.unroll; u++ {
			e.step(u, nil)
		}
		ADDQ(U32(block), i)
		JMP(LabelRef(l.name + t.suffix + "_blocks"))
	}
	Label(l.name + t.suffix + "_vectors")
	limit1 := GP64()
	MOVQ(n, limit1)
	ANDQ(I32(-t.lanes), limit1)
	Label(l.name + t.suffix + "_vectorloop")
	CMPQ(i, limit1)
	JAE(LabelRef(l.name + t.suffix + "_tail"))
	e.step(0, nil)
	ADDQ(U32(t.lanes), i)
	JMP(LabelRef(l.name + t.suffix + "_vectorloop"))

	Label(l.name + t.suffix + "_tail")
	rem := GP64()
	MOVQ(n, rem)
	SUBQ(i, rem)
	JZ(LabelRef(l.name + t.suffix + "_done"))
	tm := &tailMask{}
	if t.avx512 {
		bits := GP32()
		MOVL(U32(0xffffffff), bits)
		BZHIL(rem.As32(), bits, bits)
		tm.k = K()
		KMOVW(bits, tm.k)
	} else {
		base := GP64()
		LEAQ(tailMaskTab(), base)
		off := GP64()
		MOVQ(U32(8), off)
		SUBQ(rem, off)
		tm.vec = YMM()
		VMOVUPS(Mem{Base: base, Index: off, Scale: 4}, tm.vec)
	}
	e.step(0, tm)
}

// finish reduces the accumulators into the results, returns, and writes
// the constants' prologue.
func (e *emitter) finish() {
	l, t := e.l, e.t
	Label(l.name + t.suffix + "_done")
	for j, k := range l.accs {
		vs := make([]VecVirtual, e.unroll)
		for u := range vs {
			vs[u] = e.accs[u][j]
		}
		x := reduce(t, k, vs)
		VMOVSS(x, frame.Return(l.rets[j]))
	}
	VZEROUPPER()
	RET()

	Label(e.prologue)
	for _, bits := range e.c.hoistList {
		VMOVUPS(constBits(bits), e.c.hoisted[bits])
	}
	JMP(LabelRef(e.body))
}

// reduce combines the accumulators pairwise (0+1, 2+3, then those sums),
// then the lanes by halves, and returns lane 0 as an XMM register.
func reduce(t *target, k accKind, vs []VecVirtual) Register {
	op := func(a, b, dst Op) {
		if k == accSum {
			VADDPS(a, b, dst)
		} else {
			VMAXPS(a, b, dst)
		}
	}
	for len(vs) > 1 {
		var next []VecVirtual
		for j := 0; j+1 < len(vs); j += 2 {
			op(vs[j+1], vs[j], vs[j])
			next = append(next, vs[j])
		}
		if len(vs)%2 == 1 {
			next = append(next, vs[len(vs)-1])
		}
		vs = next
	}
	v := vs[0]
	y := v.AsY()
	if t.avx512 {
		hi := YMM()
		VEXTRACTF32X8(U8(1), v, hi)
		op(hi, y, y)
	}
	x := v.AsX()
	hi := XMM()
	VEXTRACTF128(U8(1), y, hi)
	op(hi, x, x)
	VMOVHLPS(x, x, hi)
	op(hi, x, x)
	VMOVSHDUP(x, hi)
	if k == accSum {
		VADDSS(hi, x, x)
	} else {
		VMAXSS(hi, x, x)
	}
	return x
}

// ---------------------------------------------------------------------------
// Small emit helpers. Go assembly puts the destination last and the sources
// in reverse Intel order: VSUBPS b, a, d computes d = a - b.

func (c *ctx) v() VecVirtual { return c.t.vec() }

func (c *ctx) add(a VecVirtual, b Op) VecVirtual { d := c.v(); VADDPS(b, a, d); return d }
func (c *ctx) sub(a VecVirtual, b Op) VecVirtual { d := c.v(); VSUBPS(b, a, d); return d }
func (c *ctx) mul(a VecVirtual, b Op) VecVirtual { d := c.v(); VMULPS(b, a, d); return d }

// fma returns a*b + d (d may be memory).
func (c *ctx) fma(a, b VecVirtual, d Op) VecVirtual {
	r := c.v()
	VMOVAPS(a, r)
	VFMADD213PS(d, b, r)
	return r
}

// fmaC returns a*bc + dc for constants bc and dc.
func (c *ctx) fmaC(a VecVirtual, bc, dc float32) VecVirtual {
	r := c.load(c.k(bc))
	VFMADD213PS(c.k(dc), a, r)
	return r
}

// rsubC returns cst - v.
func (c *ctx) rsubC(cst float32, v VecVirtual) VecVirtual {
	d := c.load(c.k(cst))
	VSUBPS(v, d, d)
	return d
}

// fnma returns d - a*b.
func (c *ctx) fnma(a VecVirtual, b Op, d VecVirtual) VecVirtual {
	r := c.v()
	VMOVAPS(d, r)
	VFNMADD231PS(b, a, r)
	return r
}

func (c *ctx) load(m Op) VecVirtual { d := c.v(); VMOVUPS(m, d); return d }

// horner returns ((cs[k]·x + cs[k-1])·x + ...)·x + cs[0].
func (c *ctx) horner(x VecVirtual, cs []float32) VecVirtual {
	p := c.load(c.k(cs[len(cs)-1]))
	for j := len(cs) - 2; j >= 0; j-- {
		VFMADD213PS(c.k(cs[j]), x, p)
	}
	return p
}

// recip returns 1/d, correctly rounded.
func (c *ctx) recip(d VecVirtual) VecVirtual {
	r := c.v()
	VDIVPS(d, c.creg(1), r)
	return r
}

func (c *ctx) abs(x VecVirtual) VecVirtual {
	d := c.v()
	VANDPS(c.kb(0x7fffffff), x, d)
	return d
}

// clamp returns min(max(x, lo), hi), NaN staying NaN.
func (c *ctx) clamp(x VecVirtual, lo, hi float32) VecVirtual {
	d := c.v()
	VMAXPS(x, c.creg(lo), d) // the first Go operand is returned when either is NaN
	VMINPS(d, c.creg(hi), d)
	return d
}

// atLeast returns max(x, lo), NaN staying NaN.
func (c *ctx) atLeast(x VecVirtual, lo float32) VecVirtual {
	d := c.v()
	VMAXPS(x, c.creg(lo), d)
	return d
}

// mask is a per-lane predicate: an opmask register on AVX-512, an all-ones
// lane vector on AVX2.
type mask struct {
	k   OpmaskVirtual
	vec VecVirtual
}

// Comparison predicates of VCMPPS.
const (
	cmpLT  = 0x11 // a < b, false on NaN
	cmpNGE = 0x19 // !(a >= b), true on NaN
)

// cmp returns the lanes where a pred b.
func (c *ctx) cmp(pred uint8, a VecVirtual, b Op) mask {
	if c.t.avx512 {
		k := K()
		VCMPPS(U8(pred), b, a, k)
		return mask{k: k}
	}
	m := c.v()
	VCMPPS(U8(pred), b, a, m)
	return mask{vec: m}
}

// blend returns ifSet where m holds, ifClear elsewhere.
func (c *ctx) blend(m mask, ifSet, ifClear VecVirtual) VecVirtual {
	d := c.v()
	if c.t.avx512 {
		VBLENDMPS(ifSet, ifClear, m.k, d)
	} else {
		VBLENDVPS(m.vec, ifSet, ifClear, d)
	}
	return d
}

// copySign returns |mag| with the sign of s (mag must be non-negative).
func (c *ctx) copySign(mag, s VecVirtual) VecVirtual {
	d := c.v()
	VANDPS(c.kb(0x80000000), s, d)
	VORPS(mag, d, d)
	return d
}
