package kernels

import (
	"math"
	"sync"
)

// LayerNorm normalizes each row of x over its cols (conventions in
// elem.go):
//
//	mean_r = Σ_j x[r][j] / cols
//	rstd_r = 1 / √(Σ_j (x[r][j]-mean_r)² / cols + eps)     (biased variance, as ONNX and PyTorch)
//	y[r][j] = (x[r][j]-mean_r)·rstd_r·gamma[j] + beta[j]
//
// mean and rstd (len >= rows each) receive mean_r and rstd_r for
// LayerNormBackward; either may be nil when not needed. y may be x.
func LayerNorm(threads, rows, cols int, y []float32, ldY int, x []float32, ldX int, gamma, beta []float32, eps float32, mean, rstd []float32) {
	elemCheckDims(rows, cols, "LayerNorm")
	elemCheckMatrix(y, rows, cols, ldY, "LayerNorm y")
	elemCheckMatrix(x, rows, cols, ldX, "LayerNorm x")
	elemCheckLen(gamma, cols, "kernels: LayerNorm len(gamma) < cols")
	elemCheckLen(beta, cols, "kernels: LayerNorm len(beta) < cols")
	if mean != nil {
		elemCheckLen(mean, rows, "kernels: LayerNorm len(mean) < rows")
	}
	if rstd != nil {
		elemCheckLen(rstd, rows, "kernels: LayerNorm len(rstd) < rows")
	}
	if rows == 0 || cols == 0 {
		return
	}
	t := layerNormTasks.Get().(*layerNormTask)
	*t = layerNormTask{
		rows: rows, cols: cols, y: y, ldY: ldY, x: x, ldX: ldX,
		gamma: gamma[:cols], beta: beta[:cols], eps: eps, mean: mean, rstd: rstd,
	}
	Parallel(elemWorkers(threads, rows, cols), t)
	*t = layerNormTask{}
	layerNormTasks.Put(t)
}

// LayerNormBackward computes the gradients of LayerNorm from the output
// gradient dy, the input x and the mean and rstd LayerNorm saved. With
// xhat = (x-mean_r)·rstd_r and g = dy·gamma:
//
//	dx[r][j]   = rstd_r · (g[r][j] - Σ_k g[r][k]/cols - xhat[r][j]·Σ_k g[r][k]·xhat[r][k]/cols)
//	dgamma[j] += Σ_r dy[r][j]·xhat[r][j]
//	dbeta[j]  += Σ_r dy[r][j]
//
// dgamma and dbeta accumulate (zero them first for a fresh gradient), in
// row order whatever the thread count; both may be nil (frozen gamma and
// beta), but not just one. dx may be dy.
func LayerNormBackward(threads, rows, cols int, dx []float32, ldDx int, dy []float32, ldDy int, x []float32, ldX int, gamma, mean, rstd []float32, dgamma, dbeta []float32) {
	elemCheckDims(rows, cols, "LayerNormBackward")
	elemCheckMatrix(dx, rows, cols, ldDx, "LayerNormBackward dx")
	elemCheckMatrix(dy, rows, cols, ldDy, "LayerNormBackward dy")
	elemCheckMatrix(x, rows, cols, ldX, "LayerNormBackward x")
	elemCheckLen(gamma, cols, "kernels: LayerNormBackward len(gamma) < cols")
	elemCheckLen(mean, rows, "kernels: LayerNormBackward len(mean) < rows")
	elemCheckLen(rstd, rows, "kernels: LayerNormBackward len(rstd) < rows")
	if (dgamma == nil) != (dbeta == nil) {
		panic("kernels: LayerNormBackward needs both dgamma and dbeta, or neither")
	}
	if dgamma != nil {
		elemCheckLen(dgamma, cols, "kernels: LayerNormBackward len(dgamma) < cols")
		elemCheckLen(dbeta, cols, "kernels: LayerNormBackward len(dbeta) < cols")
		dgamma, dbeta = dgamma[:cols], dbeta[:cols]
	}
	if rows == 0 || cols == 0 {
		return
	}
	if &dx[0] == &dy[0] && dgamma != nil && elemWorkers(threads, rows, cols) > 1 {
		// The parallel path accumulates dgamma from dy after dx is
		// written; with dx = dy that would read the overwritten values.
		threads = 1
	}
	t := layerNormTasks.Get().(*layerNormTask)
	*t = layerNormTask{
		backward: true, rows: rows, cols: cols, y: dx, ldY: ldDx, x: x, ldX: ldX, dy: dy, ldDy: ldDy,
		gamma: gamma[:cols], mean: mean, rstd: rstd, dgamma: dgamma, dbeta: dbeta,
	}
	workers := elemWorkers(threads, rows, cols)
	if workers == 1 {
		// One pass: each row's parameter gradients are added right after
		// its dx, while the row is in L1.
		t.accumulate = dgamma != nil
		t.Run(0, 1)
	} else {
		// Rows in parallel for dx, then columns in parallel for dgamma and
		// dbeta, so that each column still adds the rows in order.
		Parallel(workers, t)
		if dgamma != nil {
			t.columns = true
			Parallel(min(workers, (cols+15)/16), t) // column blocks of 16
		}
	}
	*t = layerNormTask{}
	layerNormTasks.Put(t)
}

// layerNormTask is one LayerNorm or LayerNormBackward call (y is dx for
// the backward pass).
type layerNormTask struct {
	backward   bool
	accumulate bool // backward, one worker: add dgamma and dbeta per row
	columns    bool // backward, second phase: dgamma and dbeta by column blocks
	rows, cols int
	y          []float32
	ldY        int
	x          []float32
	ldX        int
	dy         []float32
	ldDy       int
	gamma      []float32
	beta       []float32
	eps        float32
	mean, rstd []float32
	dgamma     []float32
	dbeta      []float32
}

var layerNormTasks = sync.Pool{New: func() any { return new(layerNormTask) }}

func (t *layerNormTask) Run(w, workers int) {
	if t.columns {
		lo, hi := Split(t.cols, w, workers, 16)
		if lo == hi {
			return
		}
		for r := range t.rows {
			layerNormGradAccumF32(t.dgamma[lo:hi], t.dbeta[lo:hi],
				t.dy[r*t.ldDy+lo:r*t.ldDy+hi], t.x[r*t.ldX+lo:r*t.ldX+hi], t.mean[r], t.rstd[r])
		}
		return
	}
	lo, hi := Split(t.rows, w, workers, 1)
	n := float64(t.cols)
	for r := lo; r < hi; r++ {
		y := elemRow(t.y, r, t.ldY, t.cols)
		x := elemRow(t.x, r, t.ldX, t.cols)
		if !t.backward {
			// Two passes (mean, then squared deviations) rather than
			// E[x²]-mean², which cancels when |mean| >> std.
			mean := float32(float64(sumF32(x)) / n)
			variance := float64(sumSqDevF32(x, mean)) / n
			rstd := float32(1 / math.Sqrt(variance+float64(t.eps)))
			if t.mean != nil {
				t.mean[r] = mean
			}
			if t.rstd != nil {
				t.rstd[r] = rstd
			}
			layerNormF32(y, x, t.gamma, t.beta, mean, rstd)
			continue
		}
		dy := elemRow(t.dy, r, t.ldDy, t.cols)
		mean, rstd := t.mean[r], t.rstd[r]
		sumG, sumGX := layerNormBackwardSumsF32(dy, x, t.gamma, mean, rstd)
		if t.accumulate {
			layerNormGradAccumF32(t.dgamma, t.dbeta, dy, x, mean, rstd)
		}
		layerNormBackwardF32(y, dy, x, t.gamma, mean, rstd, float32(float64(sumG)/n), float32(float64(sumGX)/n))
	}
}
