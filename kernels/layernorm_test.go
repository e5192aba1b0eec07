package kernels

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

const lnEps = 1e-5

// refLayerNorm64 returns the float64 LayerNorm of x and its mean and rstd.
func refLayerNorm64(x, gamma, beta []float32, eps float64) (y []float64, mean, rstd float64) {
	n := float64(len(x))
	for _, v := range x {
		mean += float64(v)
	}
	mean /= n
	var v2 float64
	for _, v := range x {
		v2 += (float64(v) - mean) * (float64(v) - mean)
	}
	rstd = 1 / math.Sqrt(v2/n+eps)
	y = make([]float64, len(x))
	for j, v := range x {
		y[j] = (float64(v)-mean)*rstd*float64(gamma[j]) + float64(beta[j])
	}
	return y, mean, rstd
}

// lnRows makes LayerNorm inputs: rows with an offset mean (so that a
// one-pass variance would cancel) and random gamma, beta.
func lnRows(rng *rand.Rand, s elemShape) (x, gamma, beta []float32) {
	x = elemRandRows(rng, s, 2, false)
	for r := range s.rows {
		off := float32(rng.NormFloat64() * 50)
		for j := range s.cols {
			x[r*s.ld+j] += off
		}
	}
	return x, elemRandSlice(rng, s.cols, 1, false), elemRandSlice(rng, s.cols, 1, false)
}

func TestLayerNorm(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(30, uint64(isa)))
		for _, s := range elemShapes(rng) {
			x, gamma, beta := lnRows(rng, s)
			what := "LayerNorm " + s.String()
			mean, rstd := make([]float32, s.rows), make([]float32, s.rows)
			y := elemRunThreads(t, what, elemNaNs(len(x)), func(threads int, y []float32) {
				LayerNorm(threads, s.rows, s.cols, y, s.ld, x, s.ld, gamma, beta, lnEps, mean, rstd)
			})
			for r := range s.rows {
				if s.cols == 0 {
					break
				}
				xr := elemRow(x, r, s.ld, s.cols)
				want, wm, wr := refLayerNorm64(xr, gamma, beta, lnEps)
				var absMean float64
				for _, v := range xr {
					absMean += math.Abs(float64(v))
				}
				absMean /= float64(s.cols)
				if !elemClose(mean[r], wm, elemEps*sumErrUlps(s.cols)*absMean) {
					t.Fatalf("%s row %d: mean %v, want %v", what, r, mean[r], wm)
				}
				// The variance is summed around the float32 mean.
				if !elemClose(rstd[r], wr, elemEps*(4+sumErrUlps(s.cols))*wr) {
					t.Fatalf("%s row %d: rstd %v, want %v", what, r, rstd[r], wr)
				}
				for j, w := range want {
					xhat := (float64(xr[j]) - wm) * wr
					tol := elemEps * (8*(math.Abs(xhat*float64(gamma[j]))+math.Abs(float64(beta[j]))) +
						(sumErrUlps(s.cols)+4)*(absMean*wr+math.Abs(xhat))*math.Abs(float64(gamma[j])))
					if g := y[r*s.ld+j]; !elemClose(g, w, tol) {
						t.Fatalf("%s row %d col %d: got %v, want %v", what, r, j, g, w)
					}
				}
			}
			inPlace := slices.Clone(x)
			LayerNorm(1, s.rows, s.cols, inPlace, s.ld, inPlace, s.ld, gamma, beta, lnEps, nil, nil)
			for r := range s.rows {
				for j := range s.cols {
					if !elemSameFloat(inPlace[r*s.ld+j], y[r*s.ld+j]) {
						t.Fatalf("%s in place differs at row %d col %d", what, r, j)
					}
				}
			}
		}
	})
}

func TestLayerNormBackward(t *testing.T) {
	forISAs(t, func(t *testing.T, isa ISA) {
		rng := rand.New(rand.NewPCG(31, uint64(isa)))
		for _, s := range elemShapes(rng) {
			x, gamma, beta := lnRows(rng, s)
			mean, rstd := make([]float32, s.rows), make([]float32, s.rows)
			LayerNorm(1, s.rows, s.cols, make([]float32, len(x)), s.ld, x, s.ld, gamma, beta, lnEps, mean, rstd)
			dy := elemRandRows(rng, s, 1, false)
			what := "LayerNormBackward " + s.String()

			// dx, dgamma and dbeta from every thread count; dgamma and
			// dbeta start at 1 (they accumulate).
			var dgs, dbs [][]float32
			dx := elemRunThreads(t, what, elemNaNs(len(x)), func(threads int, dx []float32) {
				dg, db := newElemGuarded(s.cols), newElemGuarded(s.cols)
				for j := range s.cols {
					dg.s()[j], db.s()[j] = 1, 1
				}
				LayerNormBackward(threads, s.rows, s.cols, dx, s.ld, dy, s.ld, x, s.ld, gamma, mean, rstd, dg.s(), db.s())
				dg.check(t, what+" dgamma")
				db.check(t, what+" dbeta")
				dgs, dbs = append(dgs, dg.s()), append(dbs, db.s())
			})
			for i := 1; i < len(dgs); i++ {
				for j := range s.cols {
					if math.Float32bits(dgs[i][j]) != math.Float32bits(dgs[0][j]) || math.Float32bits(dbs[i][j]) != math.Float32bits(dbs[0][j]) {
						t.Fatalf("%s: dgamma/dbeta[%d] depend on the thread count", what, j)
					}
				}
			}

			n := float64(s.cols)
			wantDg, wantDb, absDg := make([]float64, s.cols), make([]float64, s.cols), make([]float64, s.cols)
			for j := range s.cols {
				wantDg[j], wantDb[j], absDg[j] = 1, 1, 1
			}
			for r := range s.rows {
				xr, dyr := elemRow(x, r, s.ld, s.cols), elemRow(dy, r, s.ld, s.cols)
				m, rs := float64(mean[r]), float64(rstd[r])
				var sg, sgx, sgAbs float64
				for j := range xr {
					g := float64(dyr[j]) * float64(gamma[j])
					xhat := (float64(xr[j]) - m) * rs
					sg += g
					sgx += g * xhat
					sgAbs += math.Abs(g) * (1 + math.Abs(xhat))
					wantDg[j] += float64(dyr[j]) * xhat
					// xhat carries the rounding of the float32 mean: |mean|·rstd·eps32.
					absDg[j] += math.Abs(float64(dyr[j])) * (math.Abs(xhat) + math.Abs(m)*rs)
					wantDb[j] += float64(dyr[j])
				}
				for j := range xr {
					g := float64(dyr[j]) * float64(gamma[j])
					xhat := (float64(xr[j]) - m) * rs
					w := rs * (g - sg/n - xhat*sgx/n)
					tol := elemEps * rs * (8*(math.Abs(g)+math.Abs(sg/n)+math.Abs(xhat*sgx/n)) +
						(sumErrUlps(s.cols)+4)*(1+math.Abs(xhat))*sgAbs/n + 4*math.Abs(g)*math.Abs(m)*rs)
					if got := dx[r*s.ld+j]; !elemClose(got, w, tol) {
						t.Fatalf("%s row %d col %d: dx %v, want %v", what, r, j, got, w)
					}
				}
			}
			for j := range s.cols {
				tol := elemEps * float64(s.rows+8) * absDg[j]
				if !elemClose(dgs[0][j], wantDg[j], tol) {
					t.Fatalf("%s: dgamma[%d] = %v, want %v", what, j, dgs[0][j], wantDg[j])
				}
				// dbeta is a plain float32 sum in row order: exact.
				want := float32(1)
				for r := range s.rows {
					want += dy[r*s.ld+j]
				}
				if dbs[0][j] != want {
					t.Fatalf("%s: dbeta[%d] = %v, want %v", what, j, dbs[0][j], want)
				}
			}

			// dx may be dy, and the parameter gradients may be skipped.
			inPlace := slices.Clone(dy)
			dg, db := make([]float32, s.cols), make([]float32, s.cols)
			for j := range s.cols {
				dg[j], db[j] = 1, 1
			}
			LayerNormBackward(3, s.rows, s.cols, inPlace, s.ld, inPlace, s.ld, x, s.ld, gamma, mean, rstd, dg, db)
			noParams := slices.Clone(dy)
			LayerNormBackward(2, s.rows, s.cols, noParams, s.ld, dy, s.ld, x, s.ld, gamma, mean, rstd, nil, nil)
			for r := range s.rows {
				for j := range s.cols {
					if !elemSameFloat(inPlace[r*s.ld+j], dx[r*s.ld+j]) || !elemSameFloat(noParams[r*s.ld+j], dx[r*s.ld+j]) {
						t.Fatalf("%s in place or without dgamma differs at row %d col %d", what, r, j)
					}
				}
			}
			for j := range s.cols {
				if dg[j] != dgs[0][j] || db[j] != dbs[0][j] {
					t.Fatalf("%s in place: dgamma/dbeta[%d] differ", what, j)
				}
			}
		}
	})
}
