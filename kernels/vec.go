package kernels

import "sync"

// Element-wise vector arithmetic. Each writes dst[:len(dst)] (or y) and
// panics if an input is shorter; dst may be one of the inputs. They are safe
// to call concurrently on disjoint parts of a slice, and the result does not
// depend on how a caller splits it.

// AddF32 sets dst[i] = a[i] + b[i] for i < len(dst).
func AddF32(dst, a, b []float32) {
	elemCheckLen(a, len(dst), "kernels: AddF32 len(a) < len(dst)")
	elemCheckLen(b, len(dst), "kernels: AddF32 len(b) < len(dst)")
	addF32(dst, a[:len(dst)], b[:len(dst)])
}

// SubF32 sets dst[i] = a[i] - b[i] for i < len(dst).
func SubF32(dst, a, b []float32) {
	elemCheckLen(a, len(dst), "kernels: SubF32 len(a) < len(dst)")
	elemCheckLen(b, len(dst), "kernels: SubF32 len(b) < len(dst)")
	subF32(dst, a[:len(dst)], b[:len(dst)])
}

// MulF32 sets dst[i] = a[i] * b[i] for i < len(dst).
func MulF32(dst, a, b []float32) {
	elemCheckLen(a, len(dst), "kernels: MulF32 len(a) < len(dst)")
	elemCheckLen(b, len(dst), "kernels: MulF32 len(b) < len(dst)")
	mulF32(dst, a[:len(dst)], b[:len(dst)])
}

// DivF32 sets dst[i] = a[i] / b[i] for i < len(dst).
func DivF32(dst, a, b []float32) {
	elemCheckLen(a, len(dst), "kernels: DivF32 len(a) < len(dst)")
	elemCheckLen(b, len(dst), "kernels: DivF32 len(b) < len(dst)")
	divF32(dst, a[:len(dst)], b[:len(dst)])
}

// ScaleF32 sets dst[i] = alpha * src[i] for i < len(dst).
func ScaleF32(dst []float32, alpha float32, src []float32) {
	elemCheckLen(src, len(dst), "kernels: ScaleF32 len(src) < len(dst)")
	scaleF32(dst, alpha, src[:len(dst)])
}

// AddScalarF32 sets dst[i] = src[i] + v for i < len(dst).
func AddScalarF32(dst []float32, v float32, src []float32) {
	elemCheckLen(src, len(dst), "kernels: AddScalarF32 len(src) < len(dst)")
	addScalarF32(dst, v, src[:len(dst)])
}

// AxpyF32 sets y[i] += alpha * x[i] for i < len(y) (a fused multiply-add on
// AVX2 and AVX-512).
func AxpyF32(y []float32, alpha float32, x []float32) {
	elemCheckLen(x, len(y), "kernels: AxpyF32 len(x) < len(y)")
	axpyF32(y, alpha, x[:len(y)])
}

// SumF32 returns the sum of x. The order of additions is fixed for a given
// length and ISA (lane-wise partial sums, combined pairwise), so the result
// is reproducible but may differ in the last bits from a sequential loop;
// the generic version sums in float64.
func SumF32(x []float32) float32 { return sumF32(x) }

// DotF32 returns the sum of x[i]*y[i] for i < len(x), in SumF32's order.
func DotF32(x, y []float32) float32 {
	elemCheckLen(y, len(x), "kernels: DotF32 len(y) < len(x)")
	return dotF32(x, y[:len(x)])
}

// AddRowVector sets dst[r][j] = src[r][j] + v[j] for every row r < rows and
// column j < cols: a bias add over rows. dst may be src.
func AddRowVector(threads, rows, cols int, dst []float32, ldDst int, src []float32, ldSrc int, v []float32) {
	elemCheckDims(rows, cols, "AddRowVector")
	elemCheckMatrix(dst, rows, cols, ldDst, "AddRowVector dst")
	elemCheckMatrix(src, rows, cols, ldSrc, "AddRowVector src")
	elemCheckLen(v, cols, "kernels: AddRowVector len(v) < cols")
	if rows == 0 || cols == 0 {
		return
	}
	t := vecTasks.Get().(*vecTask)
	*t = vecTask{op: vecAddRow, rows: rows, cols: cols, dst: dst, ldDst: ldDst, src: src, ldSrc: ldSrc, v: v[:cols]}
	Parallel(elemWorkers(threads, rows, cols), t)
	*t = vecTask{}
	vecTasks.Put(t)
}

// SumRows adds the column sums of src to dst: dst[j] += Σ_r src[r][j] for
// j < cols (a bias gradient). Each column is summed in row order, whatever
// the thread count.
func SumRows(threads, rows, cols int, dst []float32, src []float32, ldSrc int) {
	elemCheckDims(rows, cols, "SumRows")
	elemCheckMatrix(src, rows, cols, ldSrc, "SumRows src")
	elemCheckLen(dst, cols, "kernels: SumRows len(dst) < cols")
	if rows == 0 || cols == 0 {
		return
	}
	t := vecTasks.Get().(*vecTask)
	*t = vecTask{op: vecSumRows, rows: rows, cols: cols, dst: dst[:cols], src: src, ldSrc: ldSrc}
	Parallel(min(elemWorkers(threads, rows, cols), (cols+15)/16), t)
	*t = vecTask{}
	vecTasks.Put(t)
}

type vecOp int

const (
	vecAddRow vecOp = iota
	vecSumRows
)

// vecTask is one AddRowVector or SumRows call split across workers; kept
// in a pool so that calls do not allocate.
type vecTask struct {
	op         vecOp
	rows, cols int
	dst        []float32
	ldDst      int
	src        []float32
	ldSrc      int
	v          []float32
}

var vecTasks = sync.Pool{New: func() any { return new(vecTask) }}

func (t *vecTask) Run(w, workers int) {
	switch t.op {
	case vecAddRow:
		lo, hi := Split(t.rows, w, workers, 1)
		for r := lo; r < hi; r++ {
			addF32(elemRow(t.dst, r, t.ldDst, t.cols), elemRow(t.src, r, t.ldSrc, t.cols), t.v)
		}
	case vecSumRows:
		// Workers own column blocks, so each column still adds rows in order.
		lo, hi := Split(t.cols, w, workers, 16)
		if lo == hi {
			return
		}
		d := t.dst[lo:hi]
		for r := range t.rows {
			s := t.src[r*t.ldSrc+lo : r*t.ldSrc+hi]
			addF32(d, d, s)
		}
	}
}
