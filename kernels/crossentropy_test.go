package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// refCrossEntropy64 returns the float64 loss of one row and its gradient
// (softmax - onehot)·scale.
func refCrossEntropy64(x []float32, target int, scale float64) (loss float64, grad []float64) {
	p := refSoftmax64(x)
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v) - m)
	}
	loss = m + math.Log(s) - float64(x[target])
	grad = make([]float64, len(x))
	for j := range p {
		grad[j] = p[j] * scale
	}
	grad[target] -= scale
	return loss, grad
}

const ignoreTarget = -100

func randTargets(rng *rand.Rand, rows, cols int) []int32 {
	t := make([]int32, rows)
	for i := range t {
		t[i] = int32(rng.IntN(max(cols, 1)))
		if cols == 0 || rng.IntN(5) == 0 {
			t[i] = ignoreTarget
		}
	}
	return t
}

func TestSoftmaxCrossEntropy(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(20, uint64(isa)))
		for _, s := range elemShapes(rng) {
			logits := elemRandRows(rng, s, 3, false)
			targets := randTargets(rng, s.rows, s.cols)
			counted := CountTargets(targets, ignoreTarget)
			scale := float32(1 / float64(max(counted, 1)))
			what := "SoftmaxCrossEntropy " + s.String()

			var losses []float64
			grad := elemRunThreads(t, what, elemNaNs(len(logits)), func(threads int, d []float32) {
				loss, n := SoftmaxCrossEntropy(threads, s.rows, s.cols, logits, s.ld, targets, ignoreTarget, d, s.ld, scale)
				if n != counted {
					t.Fatalf("%s: counted %d rows, want %d", what, n, counted)
				}
				losses = append(losses, loss)
			})
			for _, l := range losses[1:] {
				if math.Float64bits(l) != math.Float64bits(losses[0]) {
					t.Fatalf("%s: loss depends on the thread count: %v", what, losses)
				}
			}
			// Loss only: the same sum.
			lossOnly, _ := SoftmaxCrossEntropy(2, s.rows, s.cols, logits, s.ld, targets, ignoreTarget, nil, 0, scale)
			if lossOnly != losses[0] {
				t.Fatalf("%s: loss without gradient %v, with %v", what, lossOnly, losses[0])
			}

			var wantSum, tolSum float64
			for r := range s.rows {
				x := elemRow(logits, r, s.ld, s.cols)
				g := elemRow(grad, r, s.ld, s.cols)
				if targets[r] == ignoreTarget {
					for j, v := range g {
						if v != 0 {
							t.Fatalf("%s row %d (ignored) col %d: gradient %v, want 0", what, r, j, v)
						}
					}
					continue
				}
				loss, want := refCrossEntropy64(x, int(targets[r]), float64(scale))
				wantSum += loss
				m := elemMax(x)
				tolSum += elemEps * (4*(math.Abs(float64(m))+math.Abs(loss)) + sumErrUlps(s.cols))
				for j, w := range want {
					tol := math.Abs(w)*elemEps*(4+sumErrUlps(s.cols)+math.Abs(float64(x[j]-m))) + 4*elemEps*float64(scale)
					if !elemClose(g[j], w, tol) {
						t.Fatalf("%s row %d col %d (target %d): gradient %v, want %v", what, r, j, targets[r], g[j], w)
					}
				}
			}
			if math.Abs(losses[0]-wantSum) > tolSum+1e-12 {
				t.Fatalf("%s: loss sum %v, want %v (tolerance %g)", what, losses[0], wantSum, tolSum)
			}

			// The gradient may overwrite the logits.
			inPlace := slices.Clone(logits)
			loss, _ := SoftmaxCrossEntropy(1, s.rows, s.cols, inPlace, s.ld, targets, ignoreTarget, inPlace, s.ld, scale)
			if loss != losses[0] {
				t.Fatalf("%s in place: loss %v, want %v", what, loss, losses[0])
			}
			for r := range s.rows {
				for j := range s.cols {
					if !elemSameFloat(inPlace[r*s.ld+j], grad[r*s.ld+j]) {
						t.Fatalf("%s in place differs at row %d col %d", what, r, j)
					}
				}
			}
		}
	})
}

func TestSoftmaxCrossEntropyBadTarget(t *testing.T) {
	for _, target := range []int32{-1, 5, 1 << 30} {
		t.Run(fmt.Sprint(target), func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatalf("target %d of 5 classes did not panic", target)
				}
			}()
			SoftmaxCrossEntropy(1, 1, 5, make([]float32, 5), 5, []int32{target}, ignoreTarget, nil, 0, 1)
		})
	}
}
