package kernels

import (
	"encoding/binary"
	"math"
	"testing"
)

// Fuzz targets: the dispatched kernels (best ISA) against the generic
// versions (or float64 references) on inputs built from the fuzz bytes. The
// seed corpus runs with every `go test`; `go test -fuzz FuzzXxx` explores.

// elemFuzzFloats decodes raw float32 bit patterns (any value, NaN and Inf
// included).
func elemFuzzFloats(data []byte) []float32 {
	out := make([]float32, len(data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return out
}

// fuzzModerate decodes one value per byte in [-64, 63.5], with byte 0x80
// standing for -Inf (a masked score), so that row kernels see data whose
// float32 sums cannot overflow.
func fuzzModerate(data []byte) []float32 {
	out := make([]float32, len(data))
	for i, b := range data {
		out[i] = float32(int8(b)) / 2
		if b == 0x80 {
			out[i] = float32(math.Inf(-1))
		}
	}
	return out
}

func FuzzElementwise(f *testing.F) {
	f.Add(uint8(0), []byte{0, 0, 0x80, 0x3f, 0, 0, 0xc0, 0x7f, 1, 2, 3, 4, 0xff, 0xff, 0x7f, 0xff})
	for op := range elementwiseKernels {
		f.Add(uint8(op), []byte("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop"))
	}
	f.Fuzz(func(t *testing.T, op uint8, data []byte) {
		k := elementwiseKernels[int(op)%len(elementwiseKernels)]
		vals := elemFuzzFloats(data)
		n := len(vals) / k.inputs
		in := make([][]float32, k.inputs)
		for j := range in {
			in[j] = vals[j*n : (j+1)*n]
			if j > 0 && k.grad != "" {
				for i, v := range in[j] { // gradients stay finite
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
						in[j][i] = 1
					}
				}
			}
		}
		k.mapDomain(in)
		out := newElemGuarded(n)
		k.run(out.s(), in)
		out.check(t, k.name)
		for i, got := range out.s() {
			if !k.ok(in, i, got) {
				t.Fatalf("%s element %d of inputs %v: got %v", k.name, i, elemColumn(in, i), got)
			}
		}
	})
}

// dispatchedAndGeneric returns the results of run (which writes its output
// to out) at the best ISA and at Generic.
func dispatchedAndGeneric(run func(out []float32), n int) (best, generic []float32) {
	return dispatchedAndGenericRuns(func(out []float32, _ bool) { run(out) }, n)
}

// dispatchedAndGenericRuns is dispatchedAndGeneric for a run that also
// needs to know which of the two calls it is.
func dispatchedAndGenericRuns(run func(out []float32, generic bool), n int) (best, generic []float32) {
	best, generic = elemNaNs(n), elemNaNs(n)
	run(best, false)
	restore := SetMaxISA(Generic)
	run(generic, true)
	restore()
	return best, generic
}

// elemCloseRows compares two results row by row: values within 1e-4 of the
// row's largest magnitude, NaN matching NaN.
func elemCloseRows(t *testing.T, what string, rows, cols int, got, want []float32) {
	t.Helper()
	elemCloseRowsScaled(t, what, rows, cols, got, want, func(r int) float64 {
		scale := 0.0
		for _, v := range want[r*cols : (r+1)*cols] {
			if !math.IsInf(float64(v), 0) && !math.IsNaN(float64(v)) {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
		}
		return scale
	})
}

// elemCloseRowsScaled is elemCloseRows with the magnitude of row r given by
// rowScale: for gradients that cancel, the size of the terms.
func elemCloseRowsScaled(t *testing.T, what string, rows, cols int, got, want []float32, rowScale func(r int) float64) {
	t.Helper()
	for r := range rows {
		scale := rowScale(r)
		for j := range cols {
			g, w := got[r*cols+j], want[r*cols+j]
			if !elemClose(g, float64(w), 1e-4*scale+1e-30) {
				t.Fatalf("%s %dx%d row %d col %d: %v, generic %v", what, rows, cols, r, j, g, w)
			}
		}
	}
}

func FuzzRowKernels(f *testing.F) {
	f.Add(uint8(0), uint8(5), []byte("softmax rows of moderate values, with a -Inf: \x80 and more"))
	for kind := range uint8(8) {
		f.Add(kind, uint8(17), []byte("abcdefghijklmnopqrstuvwxyz\x80ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz"))
	}
	f.Fuzz(func(t *testing.T, kind, colsByte uint8, data []byte) {
		cols := int(colsByte)%150 + 1
		x := fuzzModerate(data)
		rows := len(x) / cols
		if rows == 0 {
			return
		}
		x = x[:rows*cols]
		n := rows * cols
		other := make([]float32, n) // a second input: dy, or finite scores
		for i := range other {
			other[i] = float32(math.Sin(float64(i))) // deterministic, finite
		}
		switch kind % 8 {
		case 0:
			best, gen := dispatchedAndGeneric(func(out []float32) { Softmax(2, rows, cols, out, cols, x, cols) }, n)
			elemCloseRows(t, "Softmax", rows, cols, best, gen)
		case 1:
			best, gen := dispatchedAndGeneric(func(out []float32) { LogSoftmax(2, rows, cols, out, cols, x, cols) }, n)
			elemCloseRows(t, "LogSoftmax", rows, cols, best, gen)
		case 2:
			y := make([]float32, n)
			Softmax(1, rows, cols, y, cols, x, cols)
			best, gen := dispatchedAndGeneric(func(out []float32) { SoftmaxBackward(2, rows, cols, out, cols, y, cols, other, cols) }, n)
			// |dy| <= 1 and Σ y = 1: the terms are at most 2·max y.
			elemCloseRowsScaled(t, "SoftmaxBackward", rows, cols, best, gen, func(r int) float64 {
				return 2 * float64(elemMax(y[r*cols:(r+1)*cols]))
			})
		case 3:
			mask := x[:cols]
			best, gen := dispatchedAndGeneric(func(out []float32) {
				AttentionSoftmax(2, rows, 1, cols, out, cols, other, cols, 0.5, mask, cols, false)
			}, n)
			elemCloseRows(t, "AttentionSoftmax mask", rows, cols, best, gen)
			best, gen = dispatchedAndGeneric(func(out []float32) {
				AttentionSoftmax(2, 1, rows, cols, out, cols, x, cols, 0.5, nil, 0, true)
			}, n)
			elemCloseRows(t, "AttentionSoftmax causal", rows, cols, best, gen)
		case 4, 5:
			targets := make([]int32, rows)
			for r := range targets {
				targets[r] = int32(r*7919) % int32(cols)
				if r%5 == 4 {
					targets[r] = -1
				}
			}
			finite := make([]float32, n)
			for i, v := range x {
				finite[i] = max(v, -64)
			}
			var lossBest, lossGen float64
			best, gen := dispatchedAndGenericRuns(func(out []float32, generic bool) {
				l, _ := SoftmaxCrossEntropy(2, rows, cols, finite, cols, targets, -1, out, cols, 0.5)
				if generic {
					lossGen = l
				} else {
					lossBest = l
				}
			}, n)
			// (p - onehot)·0.5: terms of size 0.5 cancel at the target.
			elemCloseRowsScaled(t, "SoftmaxCrossEntropy", rows, cols, best, gen, func(int) float64 { return 0.5 })
			if math.Abs(lossBest-lossGen) > 1e-5*(math.Abs(lossGen)+float64(rows)) {
				t.Fatalf("SoftmaxCrossEntropy %dx%d: loss %v, generic %v", rows, cols, lossBest, lossGen)
			}
		case 6, 7:
			finite := make([]float32, n)
			for i, v := range x {
				finite[i] = max(v, -64)
			}
			gamma, beta := other[:cols], make([]float32, cols)
			mean, rstd := make([]float32, rows), make([]float32, rows)
			best, gen := dispatchedAndGeneric(func(out []float32) {
				LayerNorm(2, rows, cols, out, cols, finite, cols, gamma, beta, 1e-5, mean, rstd)
			}, n)
			elemCloseRows(t, "LayerNorm", rows, cols, best, gen)
			LayerNorm(1, rows, cols, best, cols, finite, cols, gamma, beta, 1e-5, mean, rstd)
			dgBest, dgGen := make([]float32, cols), make([]float32, cols)
			best, gen = dispatchedAndGenericRuns(func(out []float32, generic bool) {
				dg := dgBest
				if generic {
					dg = dgGen
				}
				LayerNormBackward(2, rows, cols, out, cols, other, cols, finite, cols, gamma, mean, rstd, dg, make([]float32, cols))
			}, n)
			// |dy·gamma| <= 1 and |xhat| <= √cols: terms up to rstd·(2+√cols).
			elemCloseRowsScaled(t, "LayerNormBackward", rows, cols, best, gen, func(r int) float64 {
				return float64(rstd[r]) * (2 + math.Sqrt(float64(cols)))
			})
			elemCloseRows(t, "LayerNormBackward dgamma", 1, cols, dgBest, dgGen)
		}
	})
}
