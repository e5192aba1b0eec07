package kernels

import (
	"math"
	"sync"
)

// SoftmaxCrossEntropy is the fused softmax + cross-entropy of a classifier
// or language-model head (conventions in elem.go). For each row r whose
// target t = targets[r] is not ignoreIndex (t must be in [0, cols)):
//
//	loss_r       = log Σ_j e^logits[r][j] - logits[r][t]          (max-subtracted)
//	dlogits[r][j] = (softmax(logits[r])[j] - [j == t]) · gradScale
//
// It returns the sum of loss_r over those rows, added in row order in
// float64, and how many rows counted. Rows with an ignored target add
// nothing and get zero gradient. For the mean loss's gradient pass
// gradScale = 1/counted (CountTargets gives it in advance).
//
// dlogits may be nil (loss only), or logits itself (the gradient
// overwrites the logits). Each row is read from memory once: a pass for
// the maximum, then one storing e^(x-max) into dlogits while summing, then
// one scaling it, the last two on the row in L1; nothing else full-size is
// written.
func SoftmaxCrossEntropy(threads, rows, cols int, logits []float32, ldLogits int, targets []int32, ignoreIndex int32, dlogits []float32, ldDlogits int, gradScale float32) (lossSum float64, counted int) {
	elemCheckDims(rows, cols, "SoftmaxCrossEntropy")
	elemCheckMatrix(logits, rows, cols, ldLogits, "SoftmaxCrossEntropy logits")
	if dlogits != nil {
		elemCheckMatrix(dlogits, rows, cols, ldDlogits, "SoftmaxCrossEntropy dlogits")
	}
	if len(targets) < rows {
		panic("kernels: SoftmaxCrossEntropy len(targets) < rows")
	}
	for _, t := range targets[:rows] {
		if t == ignoreIndex {
			continue
		}
		if t < 0 || int(t) >= cols {
			panic("kernels: SoftmaxCrossEntropy target outside [0, cols)")
		}
		counted++
	}
	if rows == 0 || cols == 0 {
		return 0, counted
	}
	t := crossEntropyTasks.Get().(*crossEntropyTask)
	rowLoss := t.rowLoss
	if cap(rowLoss) < rows {
		rowLoss = make([]float64, rows)
	}
	*t = crossEntropyTask{
		rows: rows, cols: cols, logits: logits, ldLogits: ldLogits, targets: targets[:rows],
		ignore: ignoreIndex, dlogits: dlogits, ldDlogits: ldDlogits, gradScale: gradScale,
		rowLoss: rowLoss[:rows],
	}
	Parallel(elemWorkers(threads, rows, cols), t)
	for _, l := range t.rowLoss {
		lossSum += l
	}
	*t = crossEntropyTask{rowLoss: rowLoss}
	crossEntropyTasks.Put(t)
	return lossSum, counted
}

// CountTargets returns how many targets are not ignoreIndex: the divisor of
// the mean cross-entropy.
func CountTargets(targets []int32, ignoreIndex int32) int {
	n := 0
	for _, t := range targets {
		if t != ignoreIndex {
			n++
		}
	}
	return n
}

// crossEntropyTask is one SoftmaxCrossEntropy call split over rows; the
// per-row losses go to rowLoss (kept with the pooled task) so that their sum
// is taken in row order, whatever the split.
type crossEntropyTask struct {
	rows, cols int
	logits     []float32
	ldLogits   int
	targets    []int32
	ignore     int32
	dlogits    []float32
	ldDlogits  int
	gradScale  float32
	rowLoss    []float64
}

var crossEntropyTasks = sync.Pool{New: func() any { return new(crossEntropyTask) }}

func (t *crossEntropyTask) Run(w, workers int) {
	lo, hi := Split(t.rows, w, workers, 1)
	for r := lo; r < hi; r++ {
		x := elemRow(t.logits, r, t.ldLogits, t.cols)
		var d []float32
		if t.dlogits != nil {
			d = elemRow(t.dlogits, r, t.ldDlogits, t.cols)
		}
		target := t.targets[r]
		if target == t.ignore {
			t.rowLoss[r] = 0
			clear(d)
			continue
		}
		m := maxF32(x)
		xt := x[target] // before d, which may be x, is written
		var s float32
		if d == nil {
			s = sumExpShiftF32(x, m)
		} else {
			// Storing e^(x-m) and scaling it in place (the row is in L1)
			// beats computing the exponentials twice.
			s = expShiftSumF32(d, x, m)
			scaleF32(d, t.gradScale/s, d)
			d[target] -= t.gradScale
		}
		t.rowLoss[r] = float64(m) + math.Log(float64(s)) - float64(xt)
	}
}
