// Command dst generates kernels/dst_amd64.s and its stubs: the AVX-512 and
// AVX2 versions of dstune's DST kernels (scoring, multi-threshold counting,
// radix-select histograms and candidate collection, masked update, the
// AdamW step fused with counting) and the streaming loops that measure
// memory bandwidth. Run it through `go generate ./kernels` (kernels/gen_dst.go).
//
// Every kernel takes lengths that are whole multiples of its vector width
// (the Go side runs the generic loop on the rest) and a mode saying which
// score it computes: 0 abs |θ̂−θ0|, 1 rel |(θ̂−θ0)/θ0| (0 where θ̂−θ0 == 0),
// 2 inv-rel |θ0·(θ̂−θ0)|, 3 the value θ̂ itself (for the optimizer kernel:
// no counting).
package main

import (
	"fmt"

	"github.com/dstune/dstune/asm/internal/frame"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

const (
	modeAbs = iota
	modeRel
	modeInvRel
	modeValue
	numModes
)

var modeNames = [numModes]string{"abs", "rel", "invrel", "value"}

// maxThresholds is kernels.MaxThresholds.
const maxThresholds = 9

// Rows of the constant table, 64 bytes each (AVX2 reads the first 32).
const (
	rowAbsMask   = 0 * 64 // 0x7fffffff
	rowSignBit   = 1 * 64 // 0x80000000
	rowOne       = 2 * 64 // 1
	rowLaneCopy  = 3 * 64 // (lane&3)*2048: which histogram copy a lane increments
	rowDigitMask = 4 * 64 // 2047
	rowInfBits   = 5 * 64 // 0x7f800000
	numRows      = 6
)

// histBuckets is the number of buckets of one radix digit (11 bits).
const histBuckets = 2048

var consts Mem

func main() {
	ConstraintExpr("!purego")
	constTable()
	for _, z := range []bool{true, false} {
		scoreKernel(z)
		countKernel(z)
		maskedKernel(z)
		maskedIndicesKernel(z)
		histogramKernel(z)
		histogramPrefixKernel(z)
		collectKernel(z)
		collectRangeKernel(z)
		adamwKernel(z)
		sgdKernel(z)
		adafactorRowKernel(z)
		adafactorSquareSumsKernel(z)
		adafactorUpdateSquaresKernel(z)
		readKernel(z)
		read3Kernel(z)
		copyKernel(z)
	}
	Generate()
}

func constTable() {
	consts = GLOBL("dstconst", RODATA|NOPTR)
	rows := [numRows]func(lane int) uint32{
		func(int) uint32 { return 0x7fffffff },
		func(int) uint32 { return 0x80000000 },
		func(int) uint32 { return 1 },
		func(l int) uint32 { return uint32(l&3) * histBuckets },
		func(int) uint32 { return histBuckets - 1 },
		func(int) uint32 { return 0x7f800000 },
	}
	for r, f := range rows {
		for l := range 16 {
			DATA(r*64+l*4, U32(f(l)))
		}
	}
}

func suffix(z bool) string {
	if z {
		return "AVX512"
	}
	return "AVX2"
}

// width is the number of float32 lanes in one vector.
func width(z bool) int {
	if z {
		return 16
	}
	return 8
}

func vec(z bool) VecVirtual {
	if z {
		return ZMM()
	}
	return YMM()
}

func row(r int) Mem { return consts.Offset(r) }

// loadRow loads a constant row into a fresh register.
func loadRow(z bool, r int) VecVirtual {
	v := vec(z)
	if z {
		VMOVDQU32(row(r), v)
	} else {
		VMOVDQU(row(r), v)
	}
	return v
}

func zeroVec(z bool) VecVirtual {
	v := vec(z)
	if z {
		VPXORD(v, v, v)
	} else {
		VPXOR(v, v, v)
	}
	return v
}

func and(z bool, a Op, v VecVirtual) {
	if z {
		VPANDD(a, v, v)
	} else {
		VPAND(a, v, v)
	}
}

// emitScore computes the score of one vector of entries into a fresh
// register: theta is a memory operand or a register, seed a memory operand.
// abs is the abs-mask (register or memory), zero a zeroed register (rel).
func emitScore(z bool, mode int, theta, seed Op, abs Op, zero VecVirtual) VecVirtual {
	d := vec(z)
	VMOVUPS(theta, d)
	switch mode {
	case modeValue:
	case modeAbs:
		VSUBPS(seed, d, d)
		and(z, abs, d)
	case modeInvRel:
		s := vec(z)
		VMOVUPS(seed, s)
		VSUBPS(s, d, d)
		VMULPS(s, d, d)
		and(z, abs, d)
	case modeRel:
		s := vec(z)
		VMOVUPS(seed, s)
		VSUBPS(s, d, d)
		if z {
			nz := K()
			VCMPPS(U8(4), zero, d, nz) // NEQ_UQ: NaN differences stay NaN
			VDIVPS_Z(s, d, nz, d)
		} else {
			nz := YMM()
			VCMPPS(U8(4), zero, d, nz)
			VDIVPS(s, d, d)
			VANDPS(nz, d, d)
		}
		and(z, abs, d)
	default:
		panic("bad mode")
	}
	return d
}

// emitKey maps scores to ordered keys: NaN → 0, ±0 → 0x80000000,
// negative x → ^bits, positive x → bits | 0x80000000 (kernels.orderedKey).
// The distances are never negative and never -0 (their sign is cleared),
// so for them the key is bits | 0x80000000 with NaN lanes zeroed.
func emitKey(z bool, mode int, d VecVirtual, signBit, zero, infBits VecVirtual) VecVirtual {
	key := vec(z)
	if mode != modeValue {
		if z {
			notNaN := K()
			VPCMPD(U8(2), infBits, d, notNaN) // bits <= +Inf's
			VPORD_Z(signBit, d, notNaN, key)
		} else {
			nan := YMM()
			VPCMPGTD(infBits, d, nan)
			VPOR(signBit, d, key)
			VPANDN(key, nan, key)
		}
		return key
	}
	s := vec(z)
	if z {
		isZero, isNaN := K(), K()
		VCMPPS(U8(0), zero, d, isZero)
		VCMPPS(U8(3), d, d, isNaN)
		VPSRAD(U8(31), d, s)
		VPORD(signBit, s, s)
		VPXORD(d, s, key)
		VMOVDQA32(signBit, isZero, key)
		VPXORD(key, key, isNaN, key)
	} else {
		isZero, isNaN := YMM(), YMM()
		VCMPPS(U8(0), zero, d, isZero)
		VCMPPS(U8(3), d, d, isNaN)
		VPSRAD(U8(31), d, s)
		VPOR(signBit, s, s)
		VPXOR(d, s, key)
		VBLENDVPS(isZero, signBit, key, key)
		VPANDN(key, isNaN, key)
	}
	return key
}

// modeSwitch jumps to label prefix+mode for the runtime mode.
func modeSwitch(mode Register, prefix string, modes int) {
	for m := range modes {
		CMPQ(mode, Imm(uint64(m)))
		JE(LabelRef(fmt.Sprintf("%s_%s", prefix, modeNames[m])))
	}
	JMP(LabelRef("done"))
}

func memAt(base, index Register) Mem { return Mem{Base: base, Index: index, Scale: 1} }

func finish(z bool) {
	Label("done")
	VZEROUPPER()
	RET()
}

func scoreKernel(z bool) {
	TEXT("score"+suffix(z), NOSPLIT, "func(dst, theta, seed *float32, n int, mode int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("score%s writes dst[i] = Δ(theta[i], seed[i]) for i < n (n a multiple of %d).", suffix(z), width(z)))
	dst := Load(Param("dst"), GP64())
	theta := Load(Param("theta"), GP64())
	seed := Load(Param("seed"), GP64())
	n := Load(Param("n"), GP64())
	mode := Load(Param("mode"), GP64())
	SHLQ(U8(2), n)
	abs := loadRow(z, rowAbsMask)
	zero := zeroVec(z)
	i := GP64()
	XORQ(i, i)
	modeSwitch(mode, "mode", modeValue)
	for m := range modeValue {
		Label("mode_" + modeNames[m])
		loop := "loop_" + modeNames[m]
		Label(loop)
		CMPQ(i, n)
		JAE(LabelRef("done"))
		d := emitScore(z, m, memAt(theta, i), memAt(seed, i), abs, zero)
		VMOVUPS(d, memAt(dst, i))
		ADDQ(U32(4*width(z)), i)
		JMP(LabelRef(loop))
	}
	finish(z)
}

// thresholdOperands gives the thresholds as registers (AVX-512, broadcast
// from thresholds[j]) or as memory operands (AVX2: the Go side passes each
// threshold repeated 8 times).
func thresholdOperands(z bool, ths Register) []Op {
	var t []Op
	for j := range maxThresholds {
		if z {
			r := ZMM()
			VBROADCASTSS(Mem{Base: ths, Disp: 4 * j}, r)
			t = append(t, r)
		} else {
			t = append(t, Mem{Base: ths, Disp: 32 * j})
		}
	}
	return t
}

// emitCounts adds, per threshold j, one to acc[j]'s lanes where d > t[j].
// With intCompare the scores are non-negative floats or NaN, whose bits
// compare as signed integers in float order, and the Go side passes the
// thresholds mapped to that order (kernels.intThresholds: NaN → INT32_MAX,
// negative → -1); NaN lanes are left out (AVX-512: a write mask on every
// compare; AVX2: the lane becomes -1, which exceeds no threshold). Integer
// compares do not compete with the float pipes. Unless nt is nil, the
// counting stops after 1, 3 or 7 thresholds when nt says so (skip is the
// label to jump to).
func emitCounts(z bool, ds []VecVirtual, t []Op, acc []VecVirtual, ones VecVirtual, infBits Op, intCompare bool, nt Register, skip string) {
	notNaN := make([]Op, len(ds))
	if intCompare {
		for u, d := range ds {
			if z {
				k := K()
				VPCMPD(U8(2), infBits, d, k) // d <= +Inf as integers: not NaN
				notNaN[u] = k
			} else {
				nan := YMM()
				VPCMPGTD(infBits, d, nan)
				VPOR(nan, d, d)
			}
		}
	}
	for j := range t {
		if nt != nil && (j == 1 || j == 3 || j == 7) {
			CMPQ(nt, Imm(uint64(j)))
			JLE(LabelRef(skip))
		}
		for u, d := range ds {
			if z {
				k := K()
				if intCompare {
					VPCMPGTD(t[j], d, notNaN[u], k)
				} else {
					VCMPPS(U8(0x1e), t[j], d, k) // GT_OQ: false for NaN
				}
				VPADDD(ones, acc[j], k, acc[j])
			} else {
				m := YMM()
				if intCompare {
					VPCMPGTD(t[j], d, m)
				} else {
					VCMPPS(U8(0x1e), t[j], d, m)
				}
				VPSUBD(m, acc[j], acc[j])
			}
		}
	}
}

func storeLanes(z bool, acc []VecVirtual, lanes Register) {
	for j, a := range acc {
		if z {
			VMOVDQU32(a, Mem{Base: lanes, Disp: 64 * j})
		} else {
			VMOVDQU(a, Mem{Base: lanes, Disp: 64 * j})
		}
	}
}

func countKernel(z bool) {
	TEXT("countAbove"+suffix(z), NOSPLIT, "func(lanes *uint32, thresholds, intThresholds *float32, nt int, theta, seed *float32, n int, mode int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("countAbove%s sets lanes[16*j+l], for j < nt (and possibly more), to the number of i < n, i %% %d == l, with Δ(theta[i], seed[i]) > thresholds[j] (n a multiple of %d); the distance modes compare intThresholds, the value mode thresholds.", suffix(z), width(z), width(z)))
	lanes := Load(Param("lanes"), GP64())
	ths := Load(Param("thresholds"), GP64())
	ithsP := Load(Param("intThresholds"), GP64())
	nt := Load(Param("nt"), GP64())
	theta := Load(Param("theta"), GP64())
	seed := Load(Param("seed"), GP64())
	n := Load(Param("n"), GP64())
	mode := Load(Param("mode"), GP64())
	SHLQ(U8(2), n)
	acc := make([]VecVirtual, maxThresholds)
	for j := range acc {
		acc[j] = zeroVec(z)
	}
	var abs Op = row(rowAbsMask)
	var infBits Op = row(rowInfBits)
	var ones VecVirtual
	if z {
		abs = loadRow(z, rowAbsMask)
		ones = loadRow(z, rowOne)
		infBits = loadRow(z, rowInfBits)
	}
	zero := zeroVec(z)
	i := GP64()
	XORQ(i, i)
	CMPQ(mode, Imm(modeValue))
	JE(LabelRef("floatThresholds"))
	it := thresholdOperands(z, ithsP)
	modeSwitch(mode, "mode", modeValue)
	Label("floatThresholds")
	t := thresholdOperands(z, ths)
	JMP(LabelRef("mode_value"))
	// Two vectors an iteration while they fit, then one: more loads in
	// flight and half the loop and threshold-count overhead.
	vb := 4 * width(z)
	for m := range numModes {
		name := modeNames[m]
		Label("mode_" + name)
		for _, unroll := range []int{2, 1} {
			loop := fmt.Sprintf("loop%d_%s", unroll, name)
			next := fmt.Sprintf("next%d_%s", unroll, name)
			Label(loop)
			end := GP64()
			LEAQ(Mem{Base: i, Disp: unroll * vb}, end)
			CMPQ(end, n)
			if unroll == 2 {
				JA(LabelRef(fmt.Sprintf("loop1_%s", name)))
			} else {
				JA(LabelRef("store"))
			}
			var ds []VecVirtual
			for u := range unroll {
				th := Mem{Base: theta, Index: i, Scale: 1, Disp: u * vb}
				sd := Mem{Base: seed, Index: i, Scale: 1, Disp: u * vb}
				ds = append(ds, emitScore(z, m, th, sd, abs, zero))
			}
			if m == modeValue {
				emitCounts(z, ds, t, acc, ones, nil, false, nt, next)
			} else {
				emitCounts(z, ds, it, acc, ones, infBits, true, nt, next)
			}
			Label(next)
			ADDQ(U32(unroll*vb), i)
			JMP(LabelRef(loop))
		}
	}
	Label("store")
	storeLanes(z, acc, lanes)
	finish(z)
}

// keepMask computes which entries a masked update keeps:
// d > q || (keepEq && d == q).
func keepMask(z bool, d, q VecVirtual, eqMask Op) Op {
	if z {
		gt, eq := K(), K()
		VCMPPS(U8(0x1e), q, d, gt)
		VCMPPS(U8(0), q, d, eq)
		KANDW(eqMask, eq, eq)
		KORW(eq, gt, gt)
		return gt
	}
	gt, eq := YMM(), YMM()
	VCMPPS(U8(0x1e), q, d, gt)
	VCMPPS(U8(0), q, d, eq)
	VANDPS(eqMask, eq, eq)
	VORPS(eq, gt, gt)
	return gt
}

// loadThresholdAndEq broadcasts q and turns keepEq (0 or 1) into a mask.
func loadThresholdAndEq(z bool) (VecVirtual, Op) {
	q := vec(z)
	VBROADCASTSS(frame.Param("q"), q)
	keepEq := GP64()
	Load(Param("keepEq"), keepEq)
	NEGQ(keepEq) // 0 or all ones
	if z {
		k := K()
		KMOVW(keepEq.As32(), k)
		return q, k
	}
	x := XMM()
	VMOVQ(keepEq, x)
	m := YMM()
	VPBROADCASTD(x, m)
	return q, m
}

// blendStore writes keep ? theta : seed back to theta.
func blendStore(z bool, keep Op, thetaMem, seedMem Mem) {
	s := vec(z)
	VMOVUPS(seedMem, s)
	out := vec(z)
	if z {
		VBLENDMPS(thetaMem, s, keep, out)
	} else {
		VBLENDVPS(keep, thetaMem, s, out)
	}
	VMOVUPS(out, thetaMem)
}

func maskedKernel(z bool) {
	TEXT("maskedUpdate"+suffix(z), NOSPLIT, "func(lanes *uint32, theta, seed *float32, n int, mode int, q float32, keepEq int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("maskedUpdate%s sets theta[i] = seed[i] for every i < n (n a multiple of %d) not kept, where i is kept when Δ > q or keepEq == 1 and Δ == q, and sets lanes[l] to the number kept with i %% %d == l.", suffix(z), width(z), width(z)))
	lanes := Load(Param("lanes"), GP64())
	theta := Load(Param("theta"), GP64())
	seed := Load(Param("seed"), GP64())
	n := Load(Param("n"), GP64())
	mode := Load(Param("mode"), GP64())
	q, eqMask := loadThresholdAndEq(z)
	SHLQ(U8(2), n)
	acc := zeroVec(z)
	abs := loadRow(z, rowAbsMask)
	var ones VecVirtual
	if z {
		ones = loadRow(z, rowOne)
	}
	zero := zeroVec(z)
	i := GP64()
	XORQ(i, i)
	modeSwitch(mode, "mode", modeValue)
	for m := range modeValue {
		Label("mode_" + modeNames[m])
		loop := "loop_" + modeNames[m]
		Label(loop)
		CMPQ(i, n)
		JAE(LabelRef("store"))
		d := emitScore(z, m, memAt(theta, i), memAt(seed, i), abs, zero)
		keep := keepMask(z, d, q, eqMask)
		blendStore(z, keep, memAt(theta, i), memAt(seed, i))
		if z {
			VPADDD(ones, acc, keep, acc)
		} else {
			VPSUBD(keep, acc, acc)
		}
		ADDQ(U32(4*width(z)), i)
		JMP(LabelRef(loop))
	}
	Label("store")
	storeLanes(z, []VecVirtual{acc}, lanes)
	finish(z)
}

// emitBitLoop runs body(lane) for every set bit of bits (clobbered), lowest
// first.
func emitBitLoop(bits GPVirtual, name string, body func(lane Register)) {
	lane := GP64()
	Label(name)
	BSFL(bits.As32(), lane.As32())
	body(lane)
	t := GP32()
	LEAL(Mem{Base: bits, Disp: -1}, t)
	ANDL(t, bits.As32())
	JNZ(LabelRef(name))
}

func maskBits(z bool, keep Op) GPVirtual {
	bits := GP64()
	if z {
		KMOVW(keep, bits.As32())
	} else {
		VMOVMSKPS(keep, bits.As32())
	}
	return bits
}

func maskedIndicesKernel(z bool) {
	TEXT("maskedIndices"+suffix(z), NOSPLIT, "func(idx *int32, theta, seed *float32, n int, mode int, q float32, keepEq int, write int, base int) int")
	Pragma("noescape")
	Doc(fmt.Sprintf("maskedIndices%s writes base+i to idx, in ascending order, for every kept i < n (n a multiple of %d; kept as for maskedUpdate%s) and returns how many; when write == 1 it also resets the entries not kept to the seed.", suffix(z), width(z), suffix(z)))
	idx := Load(Param("idx"), GP64())
	theta := Load(Param("theta"), GP64())
	seed := Load(Param("seed"), GP64())
	n := Load(Param("n"), GP64())
	mode := Load(Param("mode"), GP64())
	write := Load(Param("write"), GP64())
	base := Load(Param("base"), GP64())
	q, eqMask := loadThresholdAndEq(z)
	SHLQ(U8(2), n)
	abs := loadRow(z, rowAbsMask)
	zero := zeroVec(z)
	i, cnt := GP64(), GP64()
	XORQ(i, i)
	XORQ(cnt, cnt)
	modeSwitch(mode, "mode", modeValue)
	for m := range modeValue {
		name := modeNames[m]
		Label("mode_" + name)
		Label("loop_" + name)
		CMPQ(i, n)
		JAE(LabelRef("ret"))
		d := emitScore(z, m, memAt(theta, i), memAt(seed, i), abs, zero)
		keep := keepMask(z, d, q, eqMask)
		CMPQ(write, Imm(0))
		JE(LabelRef("nowrite_" + name))
		blendStore(z, keep, memAt(theta, i), memAt(seed, i))
		Label("nowrite_" + name)
		bits := maskBits(z, keep)
		TESTL(bits.As32(), bits.As32())
		JZ(LabelRef("next_" + name))
		first := GP64()
		MOVQ(i, first)
		SHRQ(U8(2), first)
		ADDQ(base, first)
		emitBitLoop(bits, "bits_"+name, func(lane Register) {
			v := GP64()
			LEAQ(Mem{Base: first, Index: lane, Scale: 1}, v)
			MOVL(v.As32(), Mem{Base: idx, Index: cnt, Scale: 4})
			INCQ(cnt)
		})
		Label("next_" + name)
		ADDQ(U32(4*width(z)), i)
		JMP(LabelRef("loop_" + name))
	}
	Label("done")
	Label("ret")
	VZEROUPPER()
	Store(cnt, ReturnIndex(0))
	RET()
}

// keyFrame is the common frame of the selection kernels: it loads the
// score's operands and runs body(key, i) for every vector of keys.
type keyFrame struct {
	theta, seed, n, mode Register
	abs, signBit, zero   VecVirtual
	infBits              VecVirtual
}

func loadKeyFrame(z bool) keyFrame {
	var f keyFrame
	f.theta = Load(Param("theta"), GP64())
	f.seed = Load(Param("seed"), GP64())
	f.n = Load(Param("n"), GP64())
	f.mode = Load(Param("mode"), GP64())
	SHLQ(U8(2), f.n)
	f.abs = loadRow(z, rowAbsMask)
	f.signBit = loadRow(z, rowSignBit)
	f.infBits = loadRow(z, rowInfBits)
	f.zero = zeroVec(z)
	return f
}

func (f keyFrame) loops(z bool, exit string, body func(mode int, key VecVirtual, i Register)) {
	i := GP64()
	XORQ(i, i)
	modeSwitch(f.mode, "mode", numModes)
	for m := range numModes {
		Label("mode_" + modeNames[m])
		loop := "loop_" + modeNames[m]
		Label(loop)
		CMPQ(i, f.n)
		JAE(LabelRef(exit))
		d := emitScore(z, m, memAt(f.theta, i), memAt(f.seed, i), f.abs, f.zero)
		key := emitKey(z, m, d, f.signBit, f.zero, f.infBits)
		body(m, key, i)
		Label("next_" + modeNames[m])
		ADDQ(U32(4*width(z)), i)
		JMP(LabelRef(loop))
	}
}

func shiftCount() VecVirtual {
	s := Load(Param("shift"), GP64())
	x := XMM()
	VMOVQ(s, x)
	return x
}

func storeVec(z bool, v VecVirtual, m Mem) {
	if z {
		VMOVDQU32(v, m)
	} else {
		VMOVDQU(v, m)
	}
}

func histogramKernel(z bool) {
	TEXT("histogram"+suffix(z), NOSPLIT, "func(hist *uint32, theta, seed *float32, n int, mode int, shift int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("histogram%s adds one to hist[(i&3)*2048 + (key(Δ_i)>>shift)&2047] for every i < n (n a multiple of %d): four copies of the histogram, so that runs of equal digits do not wait on each other's increments.", suffix(z), width(z)))
	hist := Load(Param("hist"), GP64())
	buf := AllocLocal(64)
	f := loadKeyFrame(z)
	sh := shiftCount()
	digitMask := loadRow(z, rowDigitMask)
	laneCopy := loadRow(z, rowLaneCopy)
	f.loops(z, "done", func(mode int, key VecVirtual, i Register) {
		VPSRLD(sh, key, key)
		and(z, digitMask, key)
		if z {
			VPADDD(laneCopy, key, key)
		} else {
			VPADDD(laneCopy, key, key)
		}
		storeVec(z, key, buf)
		for l := range width(z) {
			r := GP64()
			MOVL(buf.Offset(4*l), r.As32())
			INCL(Mem{Base: hist, Index: r, Scale: 4})
		}
	})
	finish(z)
}

// prefixMatch compares key&prefixMask with prefix and returns the lanes
// that match as bits of a general-purpose register.
func prefixMatch(z bool, key, pmask, prefix VecVirtual) GPVirtual {
	t := vec(z)
	if z {
		VPANDD(pmask, key, t)
		k := K()
		VPCMPEQD(prefix, t, k)
		return maskBits(z, k)
	}
	VPAND(pmask, key, t)
	VPCMPEQD(prefix, t, t)
	return maskBits(z, t)
}

func broadcastParam(z bool, name string) VecVirtual {
	x := Load(Param(name), GP32())
	xm := XMM()
	VMOVD(x, xm)
	v := vec(z)
	VPBROADCASTD(xm, v)
	return v
}

func histogramPrefixKernel(z bool) {
	TEXT("histogramPrefix"+suffix(z), NOSPLIT, "func(hist *uint32, theta, seed *float32, n int, mode int, shift int, prefixMask, prefix uint32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("histogramPrefix%s adds one to hist[(key(Δ_i)>>shift)&2047] for every i < n (n a multiple of %d) with key(Δ_i)&prefixMask == prefix.", suffix(z), width(z)))
	hist := Load(Param("hist"), GP64())
	buf := AllocLocal(64)
	f := loadKeyFrame(z)
	sh := shiftCount()
	digitMask := loadRow(z, rowDigitMask)
	pmask := broadcastParam(z, "prefixMask")
	prefix := broadcastParam(z, "prefix")
	f.loops(z, "done", func(mode int, key VecVirtual, i Register) {
		bits := prefixMatch(z, key, pmask, prefix)
		TESTL(bits.As32(), bits.As32())
		JZ(LabelRef("next_" + modeNames[mode]))
		VPSRLD(sh, key, key)
		and(z, digitMask, key)
		storeVec(z, key, buf)
		emitBitLoop(bits, "bits_"+modeNames[mode], func(lane Register) {
			r := GP64()
			MOVL(Mem{Base: buf.Base, Disp: buf.Disp, Index: lane, Scale: 4}, r.As32())
			INCL(Mem{Base: hist, Index: r, Scale: 4})
		})
	})
	finish(z)
}

func collectKernel(z bool) {
	TEXT("collect"+suffix(z), NOSPLIT, "func(out *uint32, capacity int, theta, seed *float32, n int, mode int, prefixMask, prefix uint32) int")
	Pragma("noescape")
	Doc(fmt.Sprintf("collect%s appends to out, in order, key(Δ_i) for every i < n (n a multiple of %d) with key&prefixMask == prefix and returns how many, or -1 when more than capacity match.", suffix(z), width(z)))
	out := Load(Param("out"), GP64())
	capacity := Load(Param("capacity"), GP64())
	buf := AllocLocal(64)
	f := loadKeyFrame(z)
	pmask := broadcastParam(z, "prefixMask")
	prefix := broadcastParam(z, "prefix")
	cnt := GP64()
	XORQ(cnt, cnt)
	f.loops(z, "ret", func(mode int, key VecVirtual, i Register) {
		bits := prefixMatch(z, key, pmask, prefix)
		TESTL(bits.As32(), bits.As32())
		JZ(LabelRef("next_" + modeNames[mode]))
		storeVec(z, key, buf)
		emitBitLoop(bits, "bits_"+modeNames[mode], func(lane Register) {
			CMPQ(cnt, capacity)
			JAE(LabelRef("overflow"))
			r := GP32()
			MOVL(Mem{Base: buf.Base, Disp: buf.Disp, Index: lane, Scale: 4}, r)
			MOVL(r, Mem{Base: out, Index: cnt, Scale: 4})
			INCQ(cnt)
		})
	})
	Label("done")
	Label("ret")
	VZEROUPPER()
	Store(cnt, ReturnIndex(0))
	RET()
	Label("overflow")
	VZEROUPPER()
	MOVQ(I64(-1), cnt)
	Store(cnt, ReturnIndex(0))
	RET()
}

// AdamW constants, in this order (AVX-512: one float each; AVX2: each
// repeated 8 times).
const (
	cDecay = iota
	cBeta1
	cOneMinusBeta1
	cBeta2
	cOneMinusBeta2
	cBiasCorrection2Sqrt
	cEps
	cNegStepSize
)

func adamwKernel(z bool) {
	TEXT("adamw"+suffix(z), NOSPLIT, "func(param, grad, expAvg, expAvgSq, seed *float32, n int, c *float32, thresholds *float32, lanes *uint32, mode int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("adamw%s takes one torch.optim.AdamW step on the first n entries of param, expAvg and expAvgSq (n a multiple of %d; constants c as in kernels.adamwConstants) and, unless mode == 3, counts the new Δ(param[i], seed[i]) against the thresholds (in the integer form of countAbove%s) into lanes.", suffix(z), width(z), suffix(z)))
	p := Load(Param("param"), GP64())
	g := Load(Param("grad"), GP64())
	m := Load(Param("expAvg"), GP64())
	v := Load(Param("expAvgSq"), GP64())
	seed := Load(Param("seed"), GP64())
	n := Load(Param("n"), GP64())
	c := Load(Param("c"), GP64())
	ths := Load(Param("thresholds"), GP64())
	lanes := Load(Param("lanes"), GP64())
	mode := Load(Param("mode"), GP64())
	SHLQ(U8(2), n)
	cm := func(j int) Mem {
		if z {
			return Mem{Base: c, Disp: 4 * j}
		}
		return Mem{Base: c, Disp: 32 * j}
	}
	t := thresholdOperands(z, ths)
	acc := make([]VecVirtual, maxThresholds)
	for j := range acc {
		acc[j] = zeroVec(z)
	}
	var abs Op = row(rowAbsMask)
	var infBits Op = row(rowInfBits)
	var ones VecVirtual
	if z {
		ones = loadRow(z, rowOne)
		infBits = loadRow(z, rowInfBits)
	}
	i := GP64()
	XORQ(i, i)
	modeSwitch(mode, "mode", numModes)
	for md := range numModes {
		name := modeNames[md]
		Label("mode_" + name)
		Label("loop_" + name)
		CMPQ(i, n)
		JAE(LabelRef("store"))
		P, G, M, V := vec(z), vec(z), vec(z), vec(z)
		VMOVUPS(memAt(p, i), P)
		VMOVUPS(memAt(g, i), G)
		VMOVUPS(memAt(m, i), M)
		VMOVUPS(memAt(v, i), V)
		T, D, U := vec(z), vec(z), vec(z)
		if z {
			VMULPS_BCST(cm(cDecay), P, P)
			VMULPS_BCST(cm(cBeta1), M, M)
			VFMADD231PS_BCST(cm(cOneMinusBeta1), G, M)
			VMULPS_BCST(cm(cBeta2), V, V)
			VMULPS_BCST(cm(cOneMinusBeta2), G, T)
			VFMADD231PS(G, T, V)
			VSQRTPS(V, D)
			VDIVPS_BCST(cm(cBiasCorrection2Sqrt), D, D)
			VADDPS_BCST(cm(cEps), D, D)
			VMULPS_BCST(cm(cNegStepSize), M, U)
		} else {
			VMULPS(cm(cDecay), P, P)
			VMULPS(cm(cBeta1), M, M)
			VFMADD231PS(cm(cOneMinusBeta1), G, M)
			VMULPS(cm(cBeta2), V, V)
			VMULPS(cm(cOneMinusBeta2), G, T)
			VFMADD231PS(G, T, V)
			VSQRTPS(V, D)
			VDIVPS(cm(cBiasCorrection2Sqrt), D, D)
			VADDPS(cm(cEps), D, D)
			VMULPS(cm(cNegStepSize), M, U)
		}
		VDIVPS(D, U, U)
		VADDPS(U, P, P)
		VMOVUPS(P, memAt(p, i))
		VMOVUPS(M, memAt(m, i))
		VMOVUPS(V, memAt(v, i))
		if md != modeValue {
			zero := zeroVec(z)
			d := emitScore(z, md, P, memAt(seed, i), abs, zero)
			emitCounts(z, []VecVirtual{d}, t, acc, ones, infBits, true, nil, "")
		}
		ADDQ(U32(4*width(z)), i)
		JMP(LabelRef("loop_" + name))
	}
	Label("store")
	storeLanes(z, acc, lanes)
	finish(z)
}

// The bandwidth kernels touch every byte once with as little work as
// possible: 256 bytes per stream and iteration.

func orInto(z bool, src Mem, acc VecVirtual) {
	if z {
		VPORD(src, acc, acc)
	} else {
		VPOR(src, acc, acc)
	}
}

func readKernel(z bool) {
	TEXT("readStream"+suffix(z), NOSPLIT, "func(a *float32, n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("readStream%s reads a[0:n] (n a multiple of 64) and does nothing with it: the streaming read that measures read bandwidth.", suffix(z)))
	a := Load(Param("a"), GP64())
	n := Load(Param("n"), GP64())
	SHLQ(U8(2), n)
	var acc []VecVirtual
	for range 4 {
		acc = append(acc, zeroVec(z))
	}
	i := GP64()
	XORQ(i, i)
	Label("loop")
	CMPQ(i, n)
	JAE(LabelRef("done"))
	for u := range 256 / (4 * width(z)) {
		orInto(z, Mem{Base: a, Index: i, Scale: 1, Disp: 4 * width(z) * u}, acc[u%4])
	}
	ADDQ(U32(256), i)
	JMP(LabelRef("loop"))
	finish(z)
}

func read3Kernel(z bool) {
	TEXT("readStreams3"+suffix(z), NOSPLIT, "func(a, b, c *float32, n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("readStreams3%s reads a, b and c [0:n] (n a multiple of 64) side by side: the three-stream read bandwidth.", suffix(z)))
	a := Load(Param("a"), GP64())
	b := Load(Param("b"), GP64())
	c := Load(Param("c"), GP64())
	n := Load(Param("n"), GP64())
	SHLQ(U8(2), n)
	var acc []VecVirtual
	for range 4 {
		acc = append(acc, zeroVec(z))
	}
	i := GP64()
	XORQ(i, i)
	Label("loop")
	CMPQ(i, n)
	JAE(LabelRef("done"))
	for u := range 256 / (4 * width(z)) {
		for s, base := range []Register{a, b, c} {
			orInto(z, Mem{Base: base, Index: i, Scale: 1, Disp: 4 * width(z) * u}, acc[(u+s)%4])
		}
	}
	ADDQ(U32(256), i)
	JMP(LabelRef("loop"))
	finish(z)
}

func copyKernel(z bool) {
	TEXT("copyStream"+suffix(z), NOSPLIT, "func(dst, src *float32, n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("copyStream%s copies src[0:n] to dst (n a multiple of 64) with ordinary stores: the copy bandwidth the update kernels can reach.", suffix(z)))
	dst := Load(Param("dst"), GP64())
	src := Load(Param("src"), GP64())
	n := Load(Param("n"), GP64())
	SHLQ(U8(2), n)
	i := GP64()
	XORQ(i, i)
	Label("loop")
	CMPQ(i, n)
	JAE(LabelRef("done"))
	for u := range 256 / (4 * width(z)) {
		r := vec(z)
		VMOVUPS(Mem{Base: src, Index: i, Scale: 1, Disp: 4 * width(z) * u}, r)
		VMOVUPS(r, Mem{Base: dst, Index: i, Scale: 1, Disp: 4 * width(z) * u})
	}
	ADDQ(U32(256), i)
	JMP(LabelRef("loop"))
	finish(z)
}

// SGD flags and constants (kernels.sgdVector).
const (
	sgdWeightDecay = 1 << iota
	sgdMomentum
	sgdFirst
	sgdNesterov
)

const (
	sWeightDecay = iota
	sMomentum
	sOneMinusDampening
	sNegLR
)

// bcst returns the operand for constant j of a table at c: a broadcast
// m32 for AVX-512 (used with the _BCST forms) or, for AVX2, the constant
// repeated 8 times.
func bcst(z bool, c Register, j int) Mem {
	if z {
		return Mem{Base: c, Disp: 4 * j}
	}
	return Mem{Base: c, Disp: 32 * j}
}

func mulC(z bool, m Mem, x, dst VecVirtual) {
	if z {
		VMULPS_BCST(m, x, dst)
	} else {
		VMULPS(m, x, dst)
	}
}

// fmaC computes dst = x·c + dst.
func fmaC(z bool, m Mem, x, dst VecVirtual) {
	if z {
		VFMADD231PS_BCST(m, x, dst)
	} else {
		VFMADD231PS(m, x, dst)
	}
}

func sgdKernel(z bool) {
	TEXT("sgd"+suffix(z), NOSPLIT, "func(param, grad, buf *float32, n int, c *float32, flags int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("sgd%s takes one torch.optim.SGD step on the first n entries (n a multiple of %d; constants c and flags as in kernels.sgdVector).", suffix(z), width(z)))
	p := Load(Param("param"), GP64())
	g := Load(Param("grad"), GP64())
	buf := Load(Param("buf"), GP64())
	n := Load(Param("n"), GP64())
	c := Load(Param("c"), GP64())
	flags := Load(Param("flags"), GP64())
	SHLQ(U8(2), n)
	i := GP64()
	XORQ(i, i)
	var combos []int
	for f := range 16 {
		if f&sgdMomentum == 0 && f&(sgdFirst|sgdNesterov) != 0 {
			continue
		}
		combos = append(combos, f)
		CMPQ(flags, Imm(uint64(f)))
		JE(LabelRef(fmt.Sprintf("flags%d", f)))
	}
	JMP(LabelRef("done"))
	for _, f := range combos {
		name := fmt.Sprintf("flags%d", f)
		Label(name)
		Label("loop_" + name)
		CMPQ(i, n)
		JAE(LabelRef("done"))
		D, P := vec(z), vec(z)
		VMOVUPS(memAt(g, i), D)
		VMOVUPS(memAt(p, i), P)
		if f&sgdWeightDecay != 0 {
			fmaC(z, bcst(z, c, sWeightDecay), P, D) // d = p·wd + g
		}
		if f&sgdMomentum != 0 {
			B := vec(z)
			if f&sgdFirst != 0 {
				VMOVUPS(D, B)
			} else {
				VMOVUPS(memAt(buf, i), B)
				mulC(z, bcst(z, c, sMomentum), B, B)
				fmaC(z, bcst(z, c, sOneMinusDampening), D, B) // buf = d·(1−damp) + buf·mom
			}
			VMOVUPS(B, memAt(buf, i))
			if f&sgdNesterov != 0 {
				fmaC(z, bcst(z, c, sMomentum), B, D) // d = buf·mom + d
			} else {
				D = B
			}
		}
		fmaC(z, bcst(z, c, sNegLR), D, P) // p = d·(−lr) + p
		VMOVUPS(P, memAt(p, i))
		ADDQ(U32(4*width(z)), i)
		JMP(LabelRef("loop_" + name))
	}
	finish(z)
}

const (
	afRowScale = iota
	afScale
	afBeta1
	afOneMinusBeta1
)

func adafactorRowKernel(z bool) {
	TEXT("adafactorRow"+suffix(z), NOSPLIT, "func(param, grad, colScale, expAvg *float32, n int, c *float32, momentum int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("adafactorRow%s applies the Adafactor update to n entries of one row (n a multiple of %d; constants c as in kernels.adafactorRowVector): u = ((rowScale·colScale[j])·grad[j])·scale, through the first moment when momentum == 1, param[j] -= u.", suffix(z), width(z)))
	p := Load(Param("param"), GP64())
	g := Load(Param("grad"), GP64())
	cs := Load(Param("colScale"), GP64())
	m := Load(Param("expAvg"), GP64())
	n := Load(Param("n"), GP64())
	c := Load(Param("c"), GP64())
	momentum := Load(Param("momentum"), GP64())
	SHLQ(U8(2), n)
	i := GP64()
	XORQ(i, i)
	CMPQ(momentum, Imm(0))
	JNE(LabelRef("loop_m"))
	for _, withM := range []bool{false, true} {
		name := "loop"
		if withM {
			name = "loop_m"
		}
		Label(name)
		CMPQ(i, n)
		JAE(LabelRef("done"))
		U := vec(z)
		VMOVUPS(memAt(cs, i), U)
		mulC(z, bcst(z, c, afRowScale), U, U)
		VMULPS(memAt(g, i), U, U)
		mulC(z, bcst(z, c, afScale), U, U)
		if withM {
			M := vec(z)
			VMOVUPS(memAt(m, i), M)
			mulC(z, bcst(z, c, afBeta1), M, M)
			fmaC(z, bcst(z, c, afOneMinusBeta1), U, M)
			VMOVUPS(M, memAt(m, i))
			U = M
		}
		P := vec(z)
		VMOVUPS(memAt(p, i), P)
		VSUBPS(U, P, P)
		VMOVUPS(P, memAt(p, i))
		ADDQ(U32(4*width(z)), i)
		JMP(LabelRef(name))
	}
	finish(z)
}

func collectRangeKernel(z bool) {
	TEXT("collectRange"+suffix(z), NOSPLIT, "func(out *uint32, capacity int, lanes *uint32, theta, seed *float32, n int, mode int, lo, hi uint32) int")
	Pragma("noescape")
	Doc(fmt.Sprintf("collectRange%s appends to out, in order, key(Δ_i) for every i < n (n a multiple of %d) with lo <= key <= hi, sets lanes[l] to the number of i %% %d == l with key > hi, and returns how many keys it appended, or -1 when more than capacity are in range.", suffix(z), width(z), width(z)))
	out := Load(Param("out"), GP64())
	capacity := Load(Param("capacity"), GP64())
	lanes := Load(Param("lanes"), GP64())
	buf := AllocLocal(64)
	f := loadKeyFrame(z)
	lo := broadcastParam(z, "lo")
	hi := broadcastParam(z, "hi")
	acc := zeroVec(z)
	var ones VecVirtual
	if z {
		ones = loadRow(z, rowOne)
	} else {
		// AVX2 compares signed: flip the sign bit of keys and bounds.
		VPXOR(f.signBit, lo, lo)
		VPXOR(f.signBit, hi, hi)
	}
	cnt := GP64()
	XORQ(cnt, cnt)
	f.loops(z, "ret", func(mode int, key VecVirtual, i Register) {
		var bits GPVirtual
		if z {
			above, in := K(), K()
			VPCMPUD(U8(6), hi, key, above) // key > hi
			VPADDD(ones, acc, above, acc)
			VPCMPUD(U8(5), lo, key, in) // key >= lo
			KANDNW(in, above, in)       // and not above
			bits = maskBits(z, in)
		} else {
			sk := YMM()
			VPXOR(f.signBit, key, sk)
			above, below := YMM(), YMM()
			VPCMPGTD(hi, sk, above) // key > hi
			VPSUBD(above, acc, acc)
			VPCMPGTD(sk, lo, below) // lo > key
			VPOR(above, below, below)
			bits = maskBits(z, below)
			XORL(U32(0xff), bits.As32()) // in range: neither
		}
		TESTL(bits.As32(), bits.As32())
		JZ(LabelRef("next_" + modeNames[mode]))
		storeVec(z, key, buf)
		emitBitLoop(bits, "bits_"+modeNames[mode], func(lane Register) {
			CMPQ(cnt, capacity)
			JAE(LabelRef("overflow"))
			r := GP32()
			MOVL(Mem{Base: buf.Base, Disp: buf.Disp, Index: lane, Scale: 4}, r)
			MOVL(r, Mem{Base: out, Index: cnt, Scale: 4})
			INCQ(cnt)
		})
	})
	Label("done")
	Label("ret")
	storeLanes(z, []VecVirtual{acc}, lanes)
	VZEROUPPER()
	Store(cnt, ReturnIndex(0))
	RET()
	Label("overflow")
	VZEROUPPER()
	MOVQ(I64(-1), cnt)
	Store(cnt, ReturnIndex(0))
	RET()
}

// reduce16 sums the 16 float32 lanes of one zmm (or two ymm: lanes 0-7,
// 8-15) into the low lane of an xmm, pairing lanes l and l+8, then l and
// l+4, l+2, l+1: the order kernels.reduceLanes16 uses.
func reduce16(z bool, a []VecVirtual) VecVirtual {
	h := YMM()
	if z {
		VEXTRACTF64X4(U8(1), a[0], h)
		VADDPS(h, a[0].AsY(), h)
	} else {
		VADDPS(a[1], a[0], h)
	}
	x := XMM()
	VEXTRACTF128(U8(1), h, x)
	VADDPS(x, h.AsX(), x)
	x2 := XMM()
	VMOVHLPS(x, x, x2)
	VADDPS(x2, x, x2)
	x3 := XMM()
	VMOVSHDUP(x2, x3)
	VADDSS(x3, x2, x2)
	return x2
}

func adafactorSquareSumsKernel(z bool) {
	TEXT("adafactorSquareSums"+suffix(z), NOSPLIT, "func(rowSums, colSums, grad *float32, rows, cols int, eps1 float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("adafactorSquareSums%s adds grad[i*cols+j]² + eps1 to colSums[j] (zero on entry) and sets rowSums[i] to the row's sum in the order of kernels.AdafactorSquareSums.", suffix(z)))
	rowSums := Load(Param("rowSums"), GP64())
	colSums := Load(Param("colSums"), GP64())
	g := Load(Param("grad"), GP64())
	rows := Load(Param("rows"), GP64())
	cols := Load(Param("cols"), GP64())
	eps := vec(z)
	VBROADCASTSS(frame.Param("eps1"), eps)
	rowBytes, full := GP64(), GP64()
	MOVQ(cols, rowBytes)
	SHLQ(U8(2), rowBytes)
	MOVQ(cols, full)
	ANDQ(I32(-16), full)
	SHLQ(U8(2), full)
	i := GP64()
	XORQ(i, i)
	Label("row")
	CMPQ(i, rows)
	JAE(LabelRef("done"))
	var acc []VecVirtual
	for range 16 / width(z) {
		acc = append(acc, zeroVec(z))
	}
	j := GP64()
	XORQ(j, j)
	Label("block")
	CMPQ(j, full)
	JAE(LabelRef("reduce"))
	for u, a := range acc {
		sq := vec(z)
		VMOVUPS(Mem{Base: g, Index: j, Scale: 1, Disp: 4 * width(z) * u}, sq)
		VMULPS(sq, sq, sq)
		VADDPS(eps, sq, sq)
		VADDPS(sq, a, a)
		c := vec(z)
		VADDPS(Mem{Base: colSums, Index: j, Scale: 1, Disp: 4 * width(z) * u}, sq, c)
		VMOVUPS(c, Mem{Base: colSums, Index: j, Scale: 1, Disp: 4 * width(z) * u})
	}
	ADDQ(U32(64), j)
	JMP(LabelRef("block"))
	Label("reduce")
	sum := reduce16(z, acc)
	Label("tail")
	CMPQ(j, rowBytes)
	JAE(LabelRef("store"))
	t, c := XMM(), XMM()
	VMOVSS(Mem{Base: g, Index: j, Scale: 1}, t)
	VMULSS(t, t, t)
	VADDSS(eps.AsX(), t, t)
	VADDSS(t, sum, sum)
	VADDSS(Mem{Base: colSums, Index: j, Scale: 1}, t, c)
	VMOVSS(c, Mem{Base: colSums, Index: j, Scale: 1})
	ADDQ(U32(4), j)
	JMP(LabelRef("tail"))
	Label("store")
	VMOVSS(sum, Mem{Base: rowSums, Index: i, Scale: 4})
	ADDQ(rowBytes, g)
	INCQ(i)
	JMP(LabelRef("row"))
	finish(z)
}

func adafactorUpdateSquaresKernel(z bool) {
	TEXT("adafactorUpdateSquares"+suffix(z), NOSPLIT, "func(lanes *float64, grad, rowScale, colScale *float32, rows, cols int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("adafactorUpdateSquares%s accumulates u² (u = (rowScale[i]·colScale[j])·grad[i*cols+j], squared in float64) into lanes[l] for j %% 16 == l within each row's whole 16-blocks and into lanes[16] for the rest, as kernels.AdafactorUpdateSquares orders the sum.", suffix(z)))
	lanes := Load(Param("lanes"), GP64())
	g := Load(Param("grad"), GP64())
	rowScale := Load(Param("rowScale"), GP64())
	colScale := Load(Param("colScale"), GP64())
	rows := Load(Param("rows"), GP64())
	cols := Load(Param("cols"), GP64())
	rowBytes, full := GP64(), GP64()
	MOVQ(cols, rowBytes)
	SHLQ(U8(2), rowBytes)
	MOVQ(cols, full)
	ANDQ(I32(-16), full)
	SHLQ(U8(2), full)
	// Float64 lane accumulators: 2 zmm or 4 ymm for lanes 0..15.
	var acc []VecVirtual
	for range 16 / (width(z) / 2) {
		acc = append(acc, zeroVec(z))
	}
	tail := XMM()
	VXORPD(tail, tail, tail)
	i := GP64()
	XORQ(i, i)
	Label("row")
	CMPQ(i, rows)
	JAE(LabelRef("store"))
	r := vec(z)
	VBROADCASTSS(Mem{Base: rowScale, Index: i, Scale: 4}, r)
	j := GP64()
	XORQ(j, j)
	Label("block")
	CMPQ(j, full)
	JAE(LabelRef("tail"))
	for u := range 16 / width(z) {
		x := vec(z)
		VMULPS(Mem{Base: colScale, Index: j, Scale: 1, Disp: 4 * width(z) * u}, r, x)
		VMULPS(Mem{Base: g, Index: j, Scale: 1, Disp: 4 * width(z) * u}, x, x)
		lo, hi := vec(z), vec(z)
		if z {
			VCVTPS2PD(x.AsY(), lo)
			h := YMM()
			VEXTRACTF64X4(U8(1), x, h)
			VCVTPS2PD(h, hi)
		} else {
			VCVTPS2PD(x.AsX(), lo)
			h := XMM()
			VEXTRACTF128(U8(1), x, h)
			VCVTPS2PD(h, hi)
		}
		VFMADD231PD(lo, lo, acc[2*u])
		VFMADD231PD(hi, hi, acc[2*u+1])
	}
	ADDQ(U32(64), j)
	JMP(LabelRef("block"))
	Label("tail")
	CMPQ(j, rowBytes)
	JAE(LabelRef("next"))
	x := XMM()
	VMOVSS(Mem{Base: colScale, Index: j, Scale: 1}, x)
	VMULSS(r.AsX(), x, x)
	VMULSS(Mem{Base: g, Index: j, Scale: 1}, x, x)
	VCVTSS2SD(x, x, x)
	VFMADD231SD(x, x, tail)
	ADDQ(U32(4), j)
	JMP(LabelRef("tail"))
	Label("next")
	ADDQ(rowBytes, g)
	INCQ(i)
	JMP(LabelRef("row"))
	Label("store")
	for u, a := range acc {
		VMOVUPD(a, Mem{Base: lanes, Disp: u * 4 * width(z)})
	}
	VMOVSD(tail, Mem{Base: lanes, Disp: 128})
	Label("done")
	VZEROUPPER()
	RET()
}
