package kernels

import (
	"github.com/dstune/dstune/update"

	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestAdafactorStep runs one factored Adafactor step through the kernels
// and compares it with the algorithm computed directly in float64 from
// Shazeer & Stern's definitions (V̂ = R·C/ΣR, U = G/sqrt(V̂), clipping by
// RMS(U)/d), within float32 rounding.
func TestAdafactorStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for _, shape := range [][2]int{{1, 1}, {3, 5}, {17, 33}, {64, 100}} {
		rows, cols := shape[0], shape[1]
		n := rows * cols
		g := make([]float32, n)
		p := make([]float32, n)
		for i := range g {
			g[i] = float32(rng.NormFloat64() * 1e-2)
			p[i] = float32(rng.NormFloat64() * 0.02)
		}
		const eps1, clip, beta1 = 1e-30, 1.0, 0.9
		const step = 3
		// Previous state: something non-zero.
		R, C := make([]float32, rows), make([]float32, cols)
		for i := range R {
			R[i] = float32(rng.Float64() * 1e-3)
		}
		for j := range C {
			C[j] = float32(rng.Float64() * 1e-3)
		}
		m := make([]float32, n)
		for i := range m {
			m[i] = float32(rng.NormFloat64() * 1e-4)
		}
		beta2 := adafactorDefault.Scalars(update.StepInfo{Step: step, LRScale: 1}).Beta2

		// Reference in float64.
		rowSum, colSum := make([]float64, rows), make([]float64, cols)
		for i := range rows {
			for j := range cols {
				x := float64(g[i*cols+j])
				rowSum[i] += x*x + eps1
				colSum[j] += x*x + eps1
			}
		}
		Rn, Cn := make([]float64, rows), make([]float64, cols)
		var sumR float64
		for i := range Rn {
			Rn[i] = beta2*float64(R[i]) + (1-beta2)*rowSum[i]
			sumR += Rn[i]
		}
		for j := range Cn {
			Cn[j] = beta2*float64(C[j]) + (1-beta2)*colSum[j]
		}
		U := make([]float64, n)
		var sq float64
		for i := range rows {
			for j := range cols {
				vhat := Rn[i] * Cn[j] / sumR
				U[i*cols+j] = float64(g[i*cols+j]) / math.Sqrt(vhat)
				sq += U[i*cols+j] * U[i*cols+j]
			}
		}
		var prms float64
		for _, x := range p {
			prms += float64(x) * float64(x)
		}
		alpha := adafactorDefault.Scalars(update.StepInfo{Step: step, LRScale: 1}).Alpha * max(1e-3, math.Sqrt(prms/float64(n)))
		scale := alpha / max(1, math.Sqrt(sq/float64(n))/clip)
		// Tolerances scale with the terms' magnitudes (they may cancel).
		wantP, wantM := make([]float64, n), make([]float64, n)
		tolP, tolM := make([]float64, n), make([]float64, n)
		for k := range n {
			wantM[k] = beta1*float64(m[k]) + (1-beta1)*U[k]*scale
			wantP[k] = float64(p[k]) - wantM[k]
			tolM[k] = 1e-5 * (math.Abs(beta1*float64(m[k])) + math.Abs((1-beta1)*U[k]*scale))
			tolP[k] = 1e-6*(math.Abs(float64(p[k]))+math.Abs(wantM[k])) + tolM[k]
		}

		// The kernels.
		rs, cs := make([]float32, rows), make([]float32, cols)
		AdafactorSquareSums(rs, cs, g, rows, cols, eps1)
		AdafactorUpdateFactors(R, rs, beta2)
		AdafactorUpdateFactors(C, cs, beta2)
		rowScale, colScale := make([]float32, rows), make([]float32, cols)
		AdafactorScales(rowScale, colScale, R, C)
		gotSq := AdafactorUpdateSquares(g, rowScale, colScale, rows, cols)
		if math.Abs(gotSq-sq) > 1e-5*sq {
			t.Fatalf("%dx%d: Σ U² = %v, want %v", rows, cols, gotSq, sq)
		}
		s := float32(alpha / max(1, math.Sqrt(gotSq/float64(n))/clip))
		pk, mk := slices.Clone(p), slices.Clone(m)
		AdafactorApply(pk, g, rowScale, colScale, rows, cols, s, beta1, mk, 2)
		for k := range n {
			if math.Abs(float64(mk[k])-wantM[k]) > tolM[k] {
				t.Fatalf("%dx%d: M[%d] = %v, want %v", rows, cols, k, mk[k], wantM[k])
			}
			if math.Abs(float64(pk[k])-wantP[k]) > tolP[k] {
				t.Fatalf("%dx%d: X[%d] = %v, want %v", rows, cols, k, pk[k], wantP[k])
			}
		}

		// Fused counting counts what CountAbove counts afterwards, and
		// steps identically.
		seed := slices.Clone(p)
		pf, mf := slices.Clone(p), slices.Clone(m)
		ts := []float32{0, 1e-6, 1e-5, 1e-4}
		got := make([]int64, len(ts))
		AdafactorApplyCount(pf, g, rowScale, colScale, rows, cols, s, beta1, mf, seed, DistanceAbs, ts, got, 2)
		checkBits(t, "AdafactorApplyCount param", pf, pk)
		checkBits(t, "AdafactorApplyCount expAvg", mf, mk)
		if want := refCounts(pf, seed, DistanceAbs, ts); !slices.Equal(got, want) {
			t.Fatalf("%dx%d: counts %v, want %v", rows, cols, got, want)
		}
	}
}

func TestAdafactorNoMomentum(t *testing.T) {
	g := []float32{1, -2, 3, -4, 5, -6}
	p := []float32{0, 0, 0, 0, 0, 0}
	rowScale := []float32{1, 2}
	colScale := []float32{0.5, 1, 2}
	AdafactorApply(p, g, rowScale, colScale, 2, 3, 0.25, 0, nil, 1)
	want := []float32{-0.125, 0.5, -1.5, 1, -2.5, 6}
	checkBits(t, "param", p, want)
}

// TestOptimizerKernelsMatchGeneric runs SGD (every branch combination) and
// the Adafactor update over every length 0..130 (and matrices whose rows
// end mid-vector) on each ISA and compares bits with the generic code.
func TestOptimizerKernelsMatchGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 28))
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, n := range sizes(t) {
			p0, g := makeData(rng, n, dataSpecial)
			buf0, _ := makeData(rng, n, dataNormal)
			for _, hs := range []SGD{
				sgdAt(update.SGD{LR: 0.1}, 1),
				sgdAt(update.SGD{LR: 0.1, WeightDecay: 0.01}, 1),
				sgdAt(update.SGD{LR: 0.1, Momentum: 0.9, Dampening: 0.1}, 1),
				sgdAt(update.SGD{LR: 0.1, Momentum: 0.9, Dampening: 0.1, WeightDecay: 0.01}, 5),
				sgdAt(update.SGD{LR: 0.1, Momentum: 0.9, Nesterov: true}, 1),
				sgdAt(update.SGD{LR: 0.1, Momentum: 0.9, Nesterov: true, WeightDecay: 0.01}, 5),
			} {
				pa, ba := slices.Clone(p0), slices.Clone(buf0)
				SGDStep(hs, pa, g, ba, 1)
				restore := SetMaxISA(Generic)
				pb, bb := slices.Clone(p0), slices.Clone(buf0)
				SGDStep(hs, pb, g, bb, 1)
				restore()
				checkBits(t, "SGD param vs generic", pa, pb)
				checkBits(t, "SGD buffer vs generic", ba, bb)
			}
			for _, cols := range []int{max(n, 1), 7, 33} {
				rows := n / cols
				m := rows * cols
				rowScale, colScale := make([]float32, rows), make([]float32, cols)
				for i := range rowScale {
					rowScale[i] = float32(0.5 + rng.Float64())
				}
				for j := range colScale {
					colScale[j] = float32(0.5 + rng.Float64())
				}
				for _, beta1 := range []float32{0, 0.9} {
					pa, ma := slices.Clone(p0[:m]), slices.Clone(buf0[:m])
					AdafactorApply(pa, g[:m], rowScale, colScale, rows, cols, 1e-3, beta1, ma, 2)
					restore := SetMaxISA(Generic)
					pb, mb := slices.Clone(p0[:m]), slices.Clone(buf0[:m])
					AdafactorApply(pb, g[:m], rowScale, colScale, rows, cols, 1e-3, beta1, mb, 2)
					restore()
					checkBits(t, "Adafactor param vs generic", pa, pb)
					checkBits(t, "Adafactor expAvg vs generic", ma, mb)
				}
			}
		}
	})
}

func FuzzSGD(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}, uint8(15))
	f.Fuzz(func(t *testing.T, raw []byte, flags uint8) {
		p0, g := fuzzFloats(raw)
		hyper, step := update.SGD{LR: 0.01}, int64(1)
		if flags&1 != 0 {
			hyper.WeightDecay = 0.1
		}
		if flags&2 != 0 {
			hyper.Momentum, hyper.Dampening = 0.9, 0.1
			hyper.Nesterov = flags&8 != 0
			if hyper.Nesterov {
				hyper.Dampening = 0
			}
		}
		if flags&4 == 0 {
			step = 2
		}
		h := sgdAt(hyper, step)
		pa, ba := slices.Clone(p0), slices.Clone(g)
		SGDStep(h, pa, g, ba, 1)
		restore := SetMaxISA(Generic)
		pb, bb := slices.Clone(p0), slices.Clone(g)
		SGDStep(h, pb, g, bb, 1)
		restore()
		checkBits(t, "param", pa, pb)
		checkBits(t, "buffer", ba, bb)
	})
}

// TestAdafactorVector runs the unfactored path (a vector parameter) as the
// doc comments describe it, against the float64 definition V ← β̂V +
// (1−β̂)(g²+ε1), U = g/sqrt(V).
func TestAdafactorVector(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	n := 77
	g, p, v := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range g {
		g[i] = float32(rng.NormFloat64() * 1e-2)
		p[i] = float32(rng.NormFloat64())
		v[i] = float32(rng.Float64() * 1e-4)
	}
	beta2 := adafactorDefault.Scalars(update.StepInfo{Step: 5, LRScale: 1}).Beta2
	want := make([]float64, n)
	for i := range want {
		vi := beta2*float64(v[i]) + (1-beta2)*(float64(g[i])*float64(g[i])+1e-30)
		want[i] = float64(p[i]) - 0.01*float64(g[i])/math.Sqrt(vi)
	}
	rowSum, sums := make([]float32, 1), make([]float32, n)
	AdafactorSquareSums(rowSum, sums, g, 1, n, 1e-30)
	AdafactorUpdateFactors(v, sums, beta2)
	rowScale, colScale := make([]float32, 1), make([]float32, n)
	AdafactorScales(rowScale, colScale, []float32{1}, v)
	AdafactorApply(p, g, rowScale, colScale, 1, n, 0.01, 0, nil, 1)
	for i := range p {
		if math.Abs(float64(p[i])-want[i]) > 1e-6*math.Abs(want[i])+1e-7 {
			t.Fatalf("p[%d] = %v, want %v", i, p[i], want[i])
		}
	}
}

// TestAdafactorReductionsMatchGeneric checks the vector row/column square
// sums and the update's sum of squares bit for bit against the generic
// order on every ISA, for row lengths 0..130 (every lane and tail case),
// and both against float64 sums within float32 rounding.
func TestAdafactorReductionsMatchGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(39, 40))
	forISAs(t, func(t *testing.T, isa ISA) {
		for cols := 0; cols <= 130; cols++ {
			rows := 1 + rng.IntN(4)
			n := rows * cols
			g := make([]float32, n)
			for i := range g {
				g[i] = float32(rng.NormFloat64() * math.Ldexp(1, rng.IntN(20)-10))
			}
			rowScale, colScale := make([]float32, rows), make([]float32, cols)
			for i := range rowScale {
				rowScale[i] = float32(0.5 + rng.Float64())
			}
			for j := range colScale {
				colScale[j] = float32(0.5 + rng.Float64())
			}
			rs, cs := make([]float32, rows), make([]float32, cols)
			AdafactorSquareSums(rs, cs, g, rows, cols, 1e-30)
			sq := AdafactorUpdateSquares(g, rowScale, colScale, rows, cols)
			restore := SetMaxISA(Generic)
			rsg, csg := make([]float32, rows), make([]float32, cols)
			AdafactorSquareSums(rsg, csg, g, rows, cols, 1e-30)
			sqg := AdafactorUpdateSquares(g, rowScale, colScale, rows, cols)
			restore()
			checkBits(t, "row sums", rs, rsg)
			checkBits(t, "column sums", cs, csg)
			if math.Float64bits(sq) != math.Float64bits(sqg) {
				t.Fatalf("cols=%d: Σ U² = %v, generic %v", cols, sq, sqg)
			}
			var want float64
			for i := range rows {
				var row float64
				for j := range cols {
					x := float64(g[i*cols+j])
					row += x*x + 1e-30
					u := float64(rowScale[i]) * float64(colScale[j]) * x
					want += u * u
				}
				if math.Abs(float64(rs[i])-row) > 1e-5*row {
					t.Fatalf("cols=%d: row sum %v, float64 %v", cols, rs[i], row)
				}
			}
			if math.Abs(sq-want) > 1e-6*want {
				t.Fatalf("cols=%d: Σ U² = %v, float64 %v", cols, sq, want)
			}
		}
	})
}

func FuzzAdafactor(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}, uint8(3), true)
	f.Fuzz(func(t *testing.T, raw []byte, rowsHint uint8, momentum bool) {
		p0, g := fuzzFloats(raw)
		rows := 1 + int(rowsHint)%5
		cols := len(g) / rows
		n := rows * cols
		p0, g = p0[:n], g[:n]
		rowScale, colScale := make([]float32, rows), make([]float32, cols)
		for i := range rowScale {
			rowScale[i] = 1 + float32(i)/8
		}
		copy(colScale, p0)
		var beta1 float32
		if momentum {
			beta1 = 0.9
		}
		run := func() ([]float32, []float32, float64, []float32, []float32) {
			rs, cs := make([]float32, rows), make([]float32, cols)
			AdafactorSquareSums(rs, cs, g, rows, cols, 1e-30)
			sq := AdafactorUpdateSquares(g, rowScale, colScale, rows, cols)
			p, m := slices.Clone(p0), slices.Clone(g)
			AdafactorApply(p, g, rowScale, colScale, rows, cols, 1e-3, beta1, m, 1)
			return rs, cs, sq, p, m
		}
		rs, cs, sq, p, m := run()
		restore := SetMaxISA(Generic)
		rsg, csg, sqg, pg, mg := run()
		restore()
		checkBits(t, "row sums", rs, rsg)
		checkBits(t, "column sums", cs, csg)
		if math.Float64bits(sq) != math.Float64bits(sqg) && !(sq != sq && sqg != sqg) {
			t.Fatalf("Σ U² = %v, generic %v", sq, sqg)
		}
		checkBits(t, "param", p, pg)
		checkBits(t, "expAvg", m, mg)
	})
}
