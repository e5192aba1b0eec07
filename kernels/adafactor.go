package kernels

import (
	"math"
	"sync"
)

// Adafactor's element-wise work (Shazeer & Stern 2018, Algorithm 4 with
// update clipping and relative step size; optional first moment as in the
// common implementations). For a rows×cols parameter X with gradient G:
//
//	R_i ← β̂2t·R_i + (1−β̂2t)·Σ_j (G_ij² + ε1)     AdafactorSquareSums gives the sums
//	C_j ← β̂2t·C_j + (1−β̂2t)·Σ_i (G_ij² + ε1)     (the state update itself is O(rows+cols))
//	V̂_ij = R_i·C_j / Σ_i R_i                       AdafactorScales turns R, C into
//	U_ij = G_ij / sqrt(V̂_ij) = (r_i·c_j)·G_ij       r_i = 1/sqrt(R_i/ΣR), c_j = 1/sqrt(C_j)
//	Û = U · α_t / max(1, RMS(U)/d)                   AdafactorUpdateSquares gives Σ U²
//	M ← β1·M + (1−β1)·Û; Û = M                        (when β1 ≠ 0)
//	X ← X − Û                                         AdafactorApply (and ...Count, fused with counting)
//
// State layout: a factored (matrix) parameter keeps R (float32, rows) and
// C (float32, cols), zero before the first step; a vector or any tensor
// kept unfactored keeps V (float32, one per entry) and is applied as a
// 1×n matrix with r = [1] and c_j = 1/sqrt(V_j) (AdafactorScales with
// rows = 1). With β1 ≠ 0 a first moment M (float32, one per entry, zero
// before the first step) is kept too. A tensor of more than two dimensions
// is factored over its last two, one matrix at a time.

// AdafactorSquareSums sets rowSums[i] = Σ_j (grad[i*cols+j]² + eps1) and
// colSums[j] = Σ_i (grad[i*cols+j]² + eps1) in float32, in a fixed order that
// every ISA reproduces bit for bit: each column sums its rows in order;
// each row sums its whole 16-entry blocks lane-wise (lane j mod 16), then
// the 16 lanes pairwise (l+8, l+4, l+2, l+1), then adds the rest of the
// row one by one.
func AdafactorSquareSums(rowSums, colSums, grad []float32, rows, cols int, eps1 float32) {
	checkMatrix(grad, rows, cols)
	if len(rowSums) != rows || len(colSums) != cols {
		panic("kernels: AdafactorSquareSums sums have the wrong length")
	}
	clear(colSums)
	if rows == 0 || cols == 0 {
		clear(rowSums)
		return
	}
	if squareSumsVector(rowSums, colSums, grad, rows, cols, eps1) {
		return
	}
	full := cols &^ 15
	for i := range rows {
		row := grad[i*cols : (i+1)*cols]
		var lanes [16]float32
		for j := 0; j < full; j += 16 {
			for l := range 16 {
				x := row[j+l]
				sq := float32(float32(x*x) + eps1)
				lanes[l] += sq
				colSums[j+l] += sq
			}
		}
		s := reduceLanes16(&lanes)
		for j := full; j < cols; j++ {
			x := row[j]
			sq := float32(float32(x*x) + eps1)
			s += sq
			colSums[j] += sq
		}
		rowSums[i] = s
	}
}

// reduceLanes16 adds 16 lanes pairwise: l+8, then l+4, l+2, l+1.
func reduceLanes16[T float32 | float64](lanes *[16]T) T {
	for w := 8; w >= 1; w /= 2 {
		for l := range w {
			lanes[l] += lanes[l+w]
		}
	}
	return lanes[0]
}

func checkMatrix(g []float32, rows, cols int) {
	if rows < 0 || cols < 0 || len(g) != rows*cols {
		panic("kernels: Adafactor matrix length is not rows*cols")
	}
}

// AdafactorUpdateFactors folds one step's sums into a second-moment
// factor: state[i] = β̂2t·state[i] + (1−β̂2t)·sums[i], computed in float64
// and rounded once. It serves R (rows), C (cols) and an unfactored V (one
// per entry; its sums are AdafactorSquareSums' colSums with rows = 1).
func AdafactorUpdateFactors(state, sums []float32, beta2 float64) {
	if len(state) != len(sums) {
		panic("kernels: AdafactorUpdateFactors lengths differ")
	}
	for i, x := range sums {
		state[i] = float32(beta2*float64(state[i]) + (1-beta2)*float64(x))
	}
}

// AdafactorScales sets rowScale[i] = 1/sqrt(R_i/ΣR) and colScale[j] =
// 1/sqrt(C_j) from the factored second-moment state R, C, so that
// U_ij = (rowScale[i]·colScale[j])·G_ij. ΣR is summed in float64. For an
// unfactored V pass r = [1] (any single positive value) and c = V: the
// row scale is then 1 and colScale[j] = 1/sqrt(V_j).
func AdafactorScales(rowScale, colScale, r, c []float32) {
	if len(rowScale) != len(r) || len(colScale) != len(c) {
		panic("kernels: AdafactorScales lengths differ")
	}
	var sum float64
	for _, x := range r {
		sum += float64(x)
	}
	for i, x := range r {
		rowScale[i] = float32(1 / math.Sqrt(float64(x)/sum))
	}
	for j, x := range c {
		colScale[j] = float32(1 / math.Sqrt(float64(x)))
	}
}

// AdafactorUpdateSquares returns Σ_ij U_ij² with U_ij =
// (rowScale[i]·colScale[j])·grad[i*cols+j] rounded to float32, squared and
// summed in float64 (RMS(U) = sqrt(sum / (rows·cols)) for the update
// clipping). The order is fixed so that every ISA gives the same bits: 16
// lane sums (lane j mod 16) over every row's whole 16-entry blocks, added
// pairwise, plus a separate sum of the rows' remaining entries.
func AdafactorUpdateSquares(grad, rowScale, colScale []float32, rows, cols int) float64 {
	checkMatrix(grad, rows, cols)
	checkScales(rowScale, colScale, rows, cols)
	var lanes [17]float64 // 16 lanes and the rows' tails
	if rows > 0 && cols > 0 && !updateSquaresVector(&lanes, grad, rowScale, colScale, rows, cols) {
		full := cols &^ 15
		for i := range rows {
			r := rowScale[i]
			row := grad[i*cols : (i+1)*cols]
			for j := 0; j < full; j += 16 {
				for l := range 16 {
					u := float64(float32(float32(r*colScale[j+l]) * row[j+l]))
					lanes[l] += u * u // exact product: fused or not, the same sum
				}
			}
			for j := full; j < cols; j++ {
				u := float64(float32(float32(r*colScale[j]) * row[j]))
				lanes[16] += u * u
			}
		}
	}
	return reduceLanes16((*[16]float64)(lanes[:16])) + lanes[16]
}

func checkScales(rowScale, colScale []float32, rows, cols int) {
	if len(rowScale) != rows || len(colScale) != cols {
		panic("kernels: Adafactor scales have the wrong length")
	}
}

// AdafactorApply takes the parameter step X ← X − Û in place, where
// Û_ij = ((rowScale[i]·colScale[j])·grad[i*cols+j])·scale, scale = α_t / max(1,
// RMS(U)/d), passed through the first moment when beta1 ≠ 0. Per entry:
//
//	u := float32(float32(rowScale[i]*colScale[j])*grad[k]) * scale
//	if beta1 != 0 { m[k] = fma(u, 1-beta1, m[k]*beta1); u = m[k] }
//	param[k] -= u
//
// expAvg may be nil when beta1 == 0. threads <= 0 means DefaultThreads().
func AdafactorApply(param, grad, rowScale, colScale []float32, rows, cols int, scale, beta1 float32, expAvg []float32, threads int) {
	checkAdafactorApply(param, grad, rowScale, colScale, rows, cols, beta1, expAvg, nil)
	adafactorApply(param, grad, rowScale, colScale, rows, cols, scale, beta1, expAvg, nil, distanceValue, nil, nil, threads)
}

// AdafactorApplyCount is AdafactorApply fused with CountAbove on the new
// parameters (block by block, as SGDStepCount).
func AdafactorApplyCount(param, grad, rowScale, colScale []float32, rows, cols int, scale, beta1 float32, expAvg, seed []float32, d Distance, thresholds []float32, counts []int64, threads int) {
	checkDistance(d)
	checkAdafactorApply(param, grad, rowScale, colScale, rows, cols, beta1, expAvg, seed)
	if len(counts) < len(thresholds) {
		panic("kernels: AdafactorApplyCount counts shorter than thresholds")
	}
	adafactorApply(param, grad, rowScale, colScale, rows, cols, scale, beta1, expAvg, seed, d, thresholds, counts, threads)
}

func checkAdafactorApply(param, g, rowScale, colScale []float32, rows, cols int, beta1 float32, expAvg, seed []float32) {
	checkMatrix(g, rows, cols)
	checkScales(rowScale, colScale, rows, cols)
	n := len(g)
	if len(param) != n || (beta1 != 0 && len(expAvg) != n) || (seed != nil && len(seed) != n) {
		panic("kernels: Adafactor slices differ in length")
	}
}

func adafactorApply(param, g, rowScale, colScale []float32, rows, cols int, scale, beta1 float32, m, seed []float32, d Distance, thresholds []float32, counts []int64, threads int) {
	task := adafactorTasks.Get().(*adafactorTask)
	*task = adafactorTask{p: param, g: g, rowScale: rowScale, colScale: colScale, cols: cols,
		scale: scale, beta1: beta1, oneMinusBeta1: 1 - beta1, m: m, seed: seed, d: d,
		ts: makeThresholdSet(thresholds), partial: task.partial}
	workers := workersFor(len(param), threads)
	task.partial = append(task.partial[:0], make([]countSet, workers)...)
	Parallel(workers, task)
	var total countSet
	for _, pc := range task.partial {
		for j := range total {
			total[j] += pc[j]
		}
	}
	*task = adafactorTask{partial: task.partial}
	adafactorTasks.Put(task)
	for j := range thresholds {
		counts[j] += total[j]
	}
}

type adafactorTask struct {
	p, g, m, seed      []float32
	rowScale, colScale []float32
	cols               int
	scale, beta1       float32
	oneMinusBeta1      float32
	d                  Distance
	ts                 thresholdSet
	partial            []countSet
}

var adafactorTasks = sync.Pool{New: func() any { return new(adafactorTask) }}

func (t *adafactorTask) Run(w, workers int) {
	lo, hi := Split(len(t.p), w, workers, 64)
	t.partial[w] = countSet{}
	for ; lo < hi; lo += fusedBlock {
		end := min(hi, lo+fusedBlock)
		t.apply(lo, end)
		if t.d != distanceValue {
			countBlock(&t.partial[w], &t.ts, t.p[lo:end], t.seed[lo:end], t.d)
		}
	}
}

func (t *adafactorTask) apply(lo, hi int) {
	for k := lo; k < hi; {
		i, j0 := k/t.cols, k%t.cols
		j1 := min(t.cols, j0+(hi-k))
		row := i * t.cols
		var m []float32
		if t.beta1 != 0 {
			m = t.m[row+j0 : row+j1]
		}
		t.applyRow(t.p[row+j0:row+j1], t.g[row+j0:row+j1], t.colScale[j0:j1], m, t.rowScale[i])
		k += j1 - j0
	}
}

// applyRow updates one row segment: the vector kernel, then the reference
// loop for what it leaves.
func (t *adafactorTask) applyRow(p, g, colScale, m []float32, r float32) {
	done := adafactorRowVector(p, g, colScale, m, r, t.scale, t.beta1, t.oneMinusBeta1)
	g, colScale = g[:len(p)], colScale[:len(p)]
	for j := done; j < len(p); j++ {
		u := float32(float32(float32(r*colScale[j])*g[j]) * t.scale)
		if t.beta1 != 0 {
			m[j] = fma32(u, t.oneMinusBeta1, float32(m[j]*t.beta1))
			u = m[j]
		}
		p[j] -= u
	}
}
