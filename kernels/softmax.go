package kernels

import (
	"math"
	"sync"
)

// Softmax family over the rows of a matrix (conventions in elem.go). A row
// holding NaN or +Inf, or only -Inf, gives NaN, as in PyTorch and ONNX.

// Softmax sets each row of dst to the softmax of that row of src:
// dst[r][j] = e^(src[r][j]-m) / Σ_k e^(src[r][k]-m), m the row maximum.
func Softmax(threads, rows, cols int, dst []float32, ldDst int, src []float32, ldSrc int) {
	elemCheckDims(rows, cols, "Softmax")
	elemCheckMatrix(dst, rows, cols, ldDst, "Softmax dst")
	elemCheckMatrix(src, rows, cols, ldSrc, "Softmax src")
	runSoftmax(threads, &softmaxTask{op: opSoftmax, rows: rows, cols: cols, dst: dst, ldDst: ldDst, a: src, ldA: ldSrc})
}

// LogSoftmax sets dst[r][j] = src[r][j] - m - log Σ_k e^(src[r][k]-m).
func LogSoftmax(threads, rows, cols int, dst []float32, ldDst int, src []float32, ldSrc int) {
	elemCheckDims(rows, cols, "LogSoftmax")
	elemCheckMatrix(dst, rows, cols, ldDst, "LogSoftmax dst")
	elemCheckMatrix(src, rows, cols, ldSrc, "LogSoftmax src")
	runSoftmax(threads, &softmaxTask{op: opLogSoftmax, rows: rows, cols: cols, dst: dst, ldDst: ldDst, a: src, ldA: ldSrc})
}

// SoftmaxBackward computes the gradient through Softmax from its output y
// and the output gradient dy: dx[r][j] = y[r][j]·(dy[r][j] - Σ_k dy[r][k]·y[r][k]).
// dx may be dy.
func SoftmaxBackward(threads, rows, cols int, dx []float32, ldDx int, y []float32, ldY int, dy []float32, ldDy int) {
	elemCheckDims(rows, cols, "SoftmaxBackward")
	elemCheckMatrix(dx, rows, cols, ldDx, "SoftmaxBackward dx")
	elemCheckMatrix(y, rows, cols, ldY, "SoftmaxBackward y")
	elemCheckMatrix(dy, rows, cols, ldDy, "SoftmaxBackward dy")
	runSoftmax(threads, &softmaxTask{op: opSoftmaxBackward, rows: rows, cols: cols, dst: dx, ldDst: ldDx, a: y, ldA: ldY, b: dy, ldB: ldDy})
}

// LogSoftmaxBackward computes the gradient through LogSoftmax from its
// output y: dx[r][j] = dy[r][j] - e^y[r][j]·Σ_k dy[r][k]. dx may be dy.
func LogSoftmaxBackward(threads, rows, cols int, dx []float32, ldDx int, y []float32, ldY int, dy []float32, ldDy int) {
	elemCheckDims(rows, cols, "LogSoftmaxBackward")
	elemCheckMatrix(dx, rows, cols, ldDx, "LogSoftmaxBackward dx")
	elemCheckMatrix(y, rows, cols, ldY, "LogSoftmaxBackward y")
	elemCheckMatrix(dy, rows, cols, ldDy, "LogSoftmaxBackward dy")
	runSoftmax(threads, &softmaxTask{op: opLogSoftmaxBackward, rows: rows, cols: cols, dst: dx, ldDst: ldDx, a: y, ldA: ldY, b: dy, ldB: ldDy})
}

// AttentionSoftmax is the softmax of attention scores: src holds batch
// matrices of rows×cols scores (matrix b's row i is row b·rows+i, stride
// ldSrc), and each row becomes
//
//	dst[b,i][j] = softmax_j(scale·src[b,i][j] + mask[i][j])
//
// where mask (rows×cols, stride ldMask, shared by all matrices) may be nil
// for none. With causal, columns j > i are masked out as well: they get
// probability 0 and are neither read nor exponentiated (so a causal row
// costs i+1 columns). Use SoftmaxBackward for the gradient with respect to
// the masked, scaled scores, then scale it by scale. dst may be src.
func AttentionSoftmax(threads, batch, rows, cols int, dst []float32, ldDst int, src []float32, ldSrc int, scale float32, mask []float32, ldMask int, causal bool) {
	elemCheckDims(rows, cols, "AttentionSoftmax")
	if batch < 0 {
		panic("kernels: AttentionSoftmax negative batch")
	}
	elemCheckMatrix(dst, batch*rows, cols, ldDst, "AttentionSoftmax dst")
	elemCheckMatrix(src, batch*rows, cols, ldSrc, "AttentionSoftmax src")
	if mask != nil {
		elemCheckMatrix(mask, rows, cols, ldMask, "AttentionSoftmax mask")
	}
	runSoftmax(threads, &softmaxTask{
		op: opAttention, rows: batch * rows, cols: cols, dst: dst, ldDst: ldDst, a: src, ldA: ldSrc,
		b: mask, ldB: ldMask, matrixRows: rows, scale: scale, causal: causal,
	})
}

type softmaxOp int

const (
	opSoftmax softmaxOp = iota
	opLogSoftmax
	opSoftmaxBackward
	opLogSoftmaxBackward
	opAttention
)

// softmaxTask is one call of the softmax family, split over rows. The
// exported functions fill one on their stack; runSoftmax copies it into a
// pooled one, so that handing it to Parallel does not allocate.
type softmaxTask struct {
	op         softmaxOp
	rows, cols int
	dst        []float32
	ldDst      int
	a          []float32 // src, or y for the backward passes
	ldA        int
	b          []float32 // dy, or the attention mask
	ldB        int
	matrixRows int // attention: rows per matrix
	scale      float32
	causal     bool
}

var softmaxTasks = sync.Pool{New: func() any { return new(softmaxTask) }}

func runSoftmax(threads int, args *softmaxTask) {
	if args.rows == 0 || args.cols == 0 {
		return
	}
	t := softmaxTasks.Get().(*softmaxTask)
	*t = *args
	Parallel(elemWorkers(threads, t.rows, t.cols), t)
	*t = softmaxTask{}
	softmaxTasks.Put(t)
}

func (t *softmaxTask) Run(w, workers int) {
	lo, hi := Split(t.rows, w, workers, 1)
	for r := lo; r < hi; r++ {
		dst := elemRow(t.dst, r, t.ldDst, t.cols)
		a := elemRow(t.a, r, t.ldA, t.cols)
		switch t.op {
		case opSoftmax:
			softmaxRow(dst, a)
		case opLogSoftmax:
			logSoftmaxRow(dst, a)
		case opSoftmaxBackward:
			softmaxBackwardF32(dst, a, elemRow(t.b, r, t.ldB, t.cols), dotF32(elemRow(t.b, r, t.ldB, t.cols), a))
		case opLogSoftmaxBackward:
			dy := elemRow(t.b, r, t.ldB, t.cols)
			logSoftmaxBackwardF32(dst, a, dy, sumF32(dy))
		case opAttention:
			t.attentionRow(r, dst, a)
		}
	}
}

func softmaxRow(dst, src []float32) {
	m := maxF32(src)
	s := expShiftSumF32(dst, src, m)
	scaleF32(dst, 1/s, dst)
}

func logSoftmaxRow(dst, src []float32) {
	m := maxF32(src)
	s := sumExpShiftF32(src, m)
	logSoftmaxF32(dst, src, m, float32(math.Log(float64(s))))
}

func (t *softmaxTask) attentionRow(r int, dst, src []float32) {
	i := r % t.matrixRows
	n := t.cols
	if t.causal {
		n = min(i+1, t.cols)
	}
	d := dst[:n]
	var m float32
	if t.b != nil {
		m = scaleAddMaxF32(d, src[:n], t.scale, elemRow(t.b, i, t.ldB, t.cols)[:n])
	} else {
		m = scaleMaxF32(d, src[:n], t.scale)
	}
	s := expShiftSumF32(d, d, m)
	scaleF32(d, 1/s, d)
	clear(dst[n:])
}
