package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// elemShape is one matrix shape of the row-kernel tests.
type elemShape struct{ rows, cols, ld int }

func (s elemShape) String() string { return fmt.Sprintf("%dx%d(ld %d)", s.rows, s.cols, s.ld) }

// elemShapes crosses every column count up to 130 (the kernels' unroll and
// tail boundaries), strides beyond cols, and a few shapes big enough to be
// split across three workers.
func elemShapes(rng *rand.Rand) []elemShape {
	var out []elemShape
	for cols := 0; cols <= 130; cols++ {
		out = append(out, elemShape{3, cols, cols + rng.IntN(4)})
	}
	return append(out,
		elemShape{0, 7, 7}, elemShape{1, 8000, 8000}, elemShape{4, 1000, 1003},
		elemShape{40, 2000, 2000}, elemShape{128, 128, 128}, elemShape{300, 256, 260})
}

// elemThreadCounts are run for every shape; results must agree bit for bit.
var elemThreadCounts = []int{1, 2, 3}

// elemEps is float32's unit roundoff.
const elemEps = 0x1p-24

// sumErrUlps bounds the relative error of a lane-wise float32 sum of n
// positive terms, in units of eps32 (each lane adds n/8 terms in order).
func sumErrUlps(n int) float64 { return float64(n)/8 + 8 }

// elemRandRows fills a rows×cols matrix with stride ld (padding NaN, to catch
// reads of it) from N(0, scale²); with specials, some rows get NaN, ±Inf or
// very large values.
func elemRandRows(rng *rand.Rand, s elemShape, scale float64, specials bool) []float32 {
	m := make([]float32, max(0, (s.rows-1)*s.ld+s.cols))
	for i := range m {
		m[i] = float32(math.NaN())
	}
	for r := range s.rows {
		for j := range s.cols {
			m[r*s.ld+j] = float32(rng.NormFloat64() * scale)
		}
		if specials && s.cols > 0 && rng.IntN(4) == 0 {
			j := rng.IntN(s.cols)
			m[r*s.ld+j] = []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e30, -1e30, 88, -104}[rng.IntN(7)]
		}
	}
	return m
}

// refSoftmax64 is the float64 softmax of x (NaN everywhere when x holds NaN
// or +Inf, or only -Inf).
func refSoftmax64(x []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	out := make([]float64, len(x))
	var s float64
	for j, v := range x {
		out[j] = math.Exp(float64(v) - m)
		s += out[j]
	}
	for j := range out {
		out[j] /= s
	}
	return out
}

// softmaxTol bounds the error of probability w = softmax(x)[j]: a few
// roundings, the lane-wise sum, and the rounding of x[j]-max, which exp
// turns into a relative error of |x[j]-max|·eps32.
func softmaxTol(x []float32, m float32, j int, w, roundings float64) float64 {
	if w == 0 {
		return 1e-45
	}
	return w*elemEps*(roundings+sumErrUlps(len(x))+math.Abs(float64(x[j])-float64(m))) + 1e-45
}

// elemClose reports whether got is within tol of want, NaN matching NaN and
// infinities matching exactly.
func elemClose(got float32, want, tol float64) bool {
	g := float64(got)
	if math.IsNaN(want) || math.IsNaN(g) {
		return math.IsNaN(want) && math.IsNaN(g)
	}
	if math.IsInf(want, 0) || math.IsInf(g, 0) {
		return g == want
	}
	return math.Abs(g-want) <= tol
}

// elemRunThreads runs f for every thread count on a fresh guarded output
// (initialised from init) and checks the outputs agree bit for bit; it
// returns the output of the first.
func elemRunThreads(t *testing.T, what string, init []float32, f func(threads int, out []float32)) []float32 {
	t.Helper()
	var first []float32
	for _, threads := range elemThreadCounts {
		g := newElemGuarded(len(init))
		copy(g.s(), init)
		f(threads, g.s())
		g.check(t, what)
		if first == nil {
			first = slices.Clone(g.s())
			continue
		}
		for i, v := range g.s() {
			if math.Float32bits(v) != math.Float32bits(first[i]) {
				t.Fatalf("%s: threads=%d differs from threads=%d at %d: %v vs %v", what, threads, elemThreadCounts[0], i, v, first[i])
			}
		}
	}
	return first
}

func elemNaNs(n int) []float32 {
	m := make([]float32, n)
	for i := range m {
		m[i] = float32(math.NaN())
	}
	return m
}

func TestSoftmax(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(10, uint64(isa)))
		for _, s := range elemShapes(rng) {
			src := elemRandRows(rng, s, 4, true)
			what := "Softmax " + s.String()
			got := elemRunThreads(t, what, elemNaNs(len(src)), func(threads int, dst []float32) {
				Softmax(threads, s.rows, s.cols, dst, s.ld, src, s.ld)
			})
			for r := range s.rows {
				x := elemRow(src, r, s.ld, s.cols)
				want, m := refSoftmax64(x), elemMax(x)
				for j, w := range want {
					if g := got[r*s.ld+j]; !elemClose(g, w, softmaxTol(x, m, j, w, 4)) {
						t.Fatalf("%s row %d col %d: got %v, want %v", what, r, j, g, w)
					}
				}
			}
			// In place gives the same bits.
			inPlace := slices.Clone(src)
			Softmax(2, s.rows, s.cols, inPlace, s.ld, inPlace, s.ld)
			for r := range s.rows {
				for j := range s.cols {
					if !elemSameFloat(inPlace[r*s.ld+j], got[r*s.ld+j]) {
						t.Fatalf("%s in place differs at row %d col %d", what, r, j)
					}
				}
			}
		}
	})
}

func TestLogSoftmax(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(11, uint64(isa)))
		for _, s := range elemShapes(rng) {
			src := elemRandRows(rng, s, 4, true)
			what := "LogSoftmax " + s.String()
			got := elemRunThreads(t, what, elemNaNs(len(src)), func(threads int, dst []float32) {
				LogSoftmax(threads, s.rows, s.cols, dst, s.ld, src, s.ld)
			})
			for r := range s.rows {
				x := elemRow(src, r, s.ld, s.cols)
				p := refSoftmax64(x)
				for j := range x {
					w := math.Log(p[j])
					if math.IsInf(w, -1) && !math.IsInf(float64(x[j]), -1) {
						// p underflowed in float64 but log p is finite:
						// recompute as x - lse.
						m := float64(slices.Max(x))
						var sum float64
						for _, v := range x {
							sum += math.Exp(float64(v) - m)
						}
						w = float64(x[j]) - m - math.Log(sum)
					}
					tol := elemEps * (4*(math.Abs(float64(x[j]))+math.Abs(w-float64(x[j]))+math.Abs(w)) + sumErrUlps(s.cols))
					if g := got[r*s.ld+j]; !elemClose(g, w, tol) {
						t.Fatalf("%s row %d col %d: got %v, want %v", what, r, j, g, w)
					}
				}
			}
		}
	})
}

func TestSoftmaxBackward(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(12, uint64(isa)))
		for _, s := range elemShapes(rng) {
			logits := elemRandRows(rng, s, 2, false)
			y := make([]float32, len(logits))
			Softmax(1, s.rows, s.cols, y, s.ld, logits, s.ld)
			dy := elemRandRows(rng, s, 1, false)
			what := "SoftmaxBackward " + s.String()
			got := elemRunThreads(t, what, elemNaNs(len(y)), func(threads int, dx []float32) {
				SoftmaxBackward(threads, s.rows, s.cols, dx, s.ld, y, s.ld, dy, s.ld)
			})
			for r := range s.rows {
				yr, dyr := elemRow(y, r, s.ld, s.cols), elemRow(dy, r, s.ld, s.cols)
				var dot, dotAbs float64
				for j := range yr {
					dot += float64(yr[j]) * float64(dyr[j])
					dotAbs += math.Abs(float64(yr[j]) * float64(dyr[j]))
				}
				for j := range yr {
					w := float64(yr[j]) * (float64(dyr[j]) - dot)
					tol := elemEps * float64(yr[j]) * (4*(math.Abs(float64(dyr[j]))+math.Abs(dot)) + sumErrUlps(s.cols)*dotAbs)
					if g := got[r*s.ld+j]; !elemClose(g, w, tol+1e-45) {
						t.Fatalf("%s row %d col %d: got %v, want %v", what, r, j, g, w)
					}
				}
			}
			// dx may be dy.
			inPlace := slices.Clone(dy)
			SoftmaxBackward(1, s.rows, s.cols, inPlace, s.ld, y, s.ld, inPlace, s.ld)
			for r := range s.rows {
				for j := range s.cols {
					if !elemSameFloat(inPlace[r*s.ld+j], got[r*s.ld+j]) {
						t.Fatalf("%s in place differs at row %d col %d", what, r, j)
					}
				}
			}
		}
	})
}

func TestLogSoftmaxBackward(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(13, uint64(isa)))
		for _, s := range elemShapes(rng) {
			logits := elemRandRows(rng, s, 2, false)
			y := make([]float32, len(logits))
			LogSoftmax(1, s.rows, s.cols, y, s.ld, logits, s.ld)
			dy := elemRandRows(rng, s, 1, false)
			what := "LogSoftmaxBackward " + s.String()
			got := elemRunThreads(t, what, elemNaNs(len(y)), func(threads int, dx []float32) {
				LogSoftmaxBackward(threads, s.rows, s.cols, dx, s.ld, y, s.ld, dy, s.ld)
			})
			for r := range s.rows {
				yr, dyr := elemRow(y, r, s.ld, s.cols), elemRow(dy, r, s.ld, s.cols)
				var sum, sumAbs float64
				for _, v := range dyr {
					sum += float64(v)
					sumAbs += math.Abs(float64(v))
				}
				for j := range yr {
					p := math.Exp(float64(yr[j]))
					w := float64(dyr[j]) - p*sum
					tol := elemEps * (4*(math.Abs(float64(dyr[j]))+p*math.Abs(sum)) + p*sumErrUlps(s.cols)*sumAbs)
					if g := got[r*s.ld+j]; !elemClose(g, w, tol+1e-45) {
						t.Fatalf("%s row %d col %d: got %v, want %v", what, r, j, g, w)
					}
				}
			}
		}
	})
}

func TestAttentionSoftmax(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(14, uint64(isa)))
		for _, dims := range [][3]int{{1, 1, 1}, {2, 5, 5}, {3, 17, 17}, {2, 33, 40}, {1, 70, 65}, {4, 128, 128}, {16, 130, 130}} {
			batch, rows, cols := dims[0], dims[1], dims[2]
			ld := cols + 1
			s := elemShape{batch * rows, cols, ld}
			src := elemRandRows(rng, s, 3, false)
			mask := elemRandRows(rng, elemShape{rows, cols, cols}, 1, false)
			for i := range mask {
				if rng.IntN(5) == 0 {
					mask[i] = float32(math.Inf(-1))
				}
			}
			for r := 0; r < rows; r++ {
				mask[r*cols] = 0 // every row keeps column 0
			}
			const scale = 0.125
			for _, m := range [][]float32{nil, mask} {
				for _, causal := range []bool{false, true} {
					what := fmt.Sprintf("AttentionSoftmax %dx%dx%d mask=%v causal=%v", batch, rows, cols, m != nil, causal)
					got := elemRunThreads(t, what, elemNaNs(len(src)), func(threads int, dst []float32) {
						AttentionSoftmax(threads, batch, rows, cols, dst, ld, src, ld, scale, m, cols, causal)
					})
					for r := range s.rows {
						i := r % rows
						z := make([]float32, cols)
						for j := range z {
							v := float64(scale) * float64(src[r*ld+j])
							if m != nil {
								v += float64(m[i*cols+j])
							}
							if causal && j > i {
								v = math.Inf(-1)
							}
							z[j] = float32(v)
						}
						want, m := refSoftmax64(z), elemMax(z)
						for j, w := range want {
							if g := got[r*ld+j]; !elemClose(g, w, softmaxTol(z, m, j, w, 6)) {
								t.Fatalf("%s row %d col %d: got %v, want %v", what, r, j, g, w)
							}
						}
					}
					inPlace := slices.Clone(src)
					AttentionSoftmax(1, batch, rows, cols, inPlace, ld, inPlace, ld, scale, m, cols, causal)
					for r := range s.rows {
						for j := range cols {
							if !elemSameFloat(inPlace[r*ld+j], got[r*ld+j]) {
								t.Fatalf("%s in place differs at row %d col %d", what, r, j)
							}
						}
					}
				}
			}
		}
	})
}

// elemMax returns the largest of x (NaN if any is NaN), -Inf when empty.
func elemMax(x []float32) float32 {
	m := float32(math.Inf(-1))
	for _, v := range x {
		m = max(m, v)
	}
	return m
}
