package tpu

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dstune/dstune/ir"
)

// lowerNode emits the StableHLO for one IR node given its operands (nil
// entries for omitted optional inputs) and returns its outputs (entries
// for outputs nobody reads may be zero values). Ops or dtypes it cannot
// express come back as errors wrapping ir.ErrNotSupported.
func lowerNode(f *fn, n *ir.Node, in []value) ([]value, error) {
	for i, v := range n.Inputs {
		if v != nil {
			if _, ok := elemType(v.DType); !ok {
				return nil, fmt.Errorf("%w: input %d is %s", ir.ErrNotSupported, i, v.DType)
			}
		}
	}
	outType := func(i int) ir.Type {
		if i < len(n.Outputs) && n.Outputs[i] != nil {
			return n.Outputs[i].Type
		}
		return ir.Type{}
	}
	switch op := n.Op.(type) {
	case *ir.Unary:
		return one(lowerUnary(f, op, in[0]))
	case *ir.Binary:
		return one(lowerBinary(f, op.Fn, in[0], in[1], outType(0)))
	case *ir.Where:
		t := outType(0)
		return []value{f.selectOp(f.broadcastTo(in[0], t.Shape), f.broadcastTo(in[1], t.Shape), f.broadcastTo(in[2], t.Shape))}, nil
	case *ir.Cast:
		if _, ok := elemType(op.To); !ok {
			return nil, fmt.Errorf("%w: Cast to %s", ir.ErrNotSupported, op.To)
		}
		return []value{f.convert(in[0], op.To)}, nil
	case *ir.Clip:
		x := in[0]
		wide := widen(f, x)
		if len(in) > 1 && in[1].name != "" {
			wide = f.max(wide, f.broadcastTo(widen(f, f.reshape(in[1], ir.Shape{})), wide.shape()))
		}
		if len(in) > 2 && in[2].name != "" {
			wide = f.min(wide, f.broadcastTo(widen(f, f.reshape(in[2], ir.Shape{})), wide.shape()))
		}
		return []value{f.convert(wide, x.dtype())}, nil
	case *ir.MatMul:
		return one(lowerMatMul(f, in[0], in[1], outType(0)))
	case *ir.Gemm:
		return one(lowerGemm(f, op, in))
	case *ir.Einsum:
		return one(lowerEinsum(f, op, in, outType(0)))
	case *ir.Reshape:
		return []value{f.reshape(in[0], op.Shape)}, nil
	case *ir.Copy:
		return []value{in[0]}, nil
	case *ir.Transpose:
		return []value{f.transpose(in[0], op.Perm)}, nil
	case *ir.Expand:
		return []value{f.broadcastTo(in[0], op.Shape)}, nil
	case *ir.Concat:
		return []value{f.concatenate(op.Axis, in)}, nil
	case *ir.Split:
		return lowerSplit(f, op, in[0]), nil
	case *ir.Slice:
		return []value{lowerSlice(f, op, in[0])}, nil
	case *ir.Gather:
		return []value{lowerGather(f, op.Axis, in[0], in[1])}, nil
	case *ir.GatherElements:
		return []value{lowerGatherElements(f, op.Axis, in[0], in[1])}, nil
	case *ir.Trilu:
		return []value{lowerTrilu(f, op, in[0])}, nil
	case *ir.Reduce:
		return one(lowerReduce(f, op, in[0], outType(0)))
	case *ir.Softmax:
		x := widen(f, in[0])
		return []value{f.convert(softmax(f, x, op.Axis, op.Log), in[0].dtype())}, nil
	case *ir.LayerNorm:
		return lowerLayerNorm(f, op, in, len(n.Outputs)), nil
	case *ir.CumSum:
		return []value{lowerCumSum(f, op, in[0])}, nil
	case *ir.TopK:
		return lowerTopK(f, op, in[0]), nil
	case *ir.Dropout:
		return lowerDropout(f, op, in[0], len(n.Outputs)), nil
	case *ir.NLLLoss:
		return lowerNLLLoss(f, op, in, len(n.Outputs)), nil
	case *ir.Conv:
		return one(lowerConv(f, op, in, outType(0)))
	case *ir.Pool:
		if len(n.Outputs) > 1 && n.Outputs[1] != nil {
			return nil, fmt.Errorf("%w: the indices output of MaxPool", ir.ErrNotSupported)
		}
		return one(lowerPool(f, op, in[0], outType(0)))
	case *ir.BatchNorm:
		return lowerBatchNorm(f, op, in, len(n.Outputs)), nil
	}
	if out, ok, err := lowerGradNode(f, n, in); ok {
		return out, err
	}
	return nil, fmt.Errorf("%w: op %s on the pjrt backend", ir.ErrNotSupported, n.Op.Name())
}

func one(v value, err error) ([]value, error) {
	if err != nil {
		return nil, err
	}
	return []value{v}, nil
}

// widen converts float16/bfloat16 to float32: the IR computes narrow
// floats in float32 and rounds the result once, and so does the lowering.
func widen(f *fn, x value) value {
	if x.dtype() == ir.Float16 || x.dtype() == ir.BFloat16 {
		return f.convert(x, ir.Float32)
	}
	return x
}

// ---------------------------------------------------------------- element-wise

func lowerUnary(f *fn, op *ir.Unary, x value) (value, error) {
	orig := x.dtype()
	if op.Fn != ir.Not && orig.IsFloat() {
		x = widen(f, x)
	}
	y, err := unaryFn(f, op.Fn, float64(op.Alpha), x)
	if err != nil {
		return value{}, err
	}
	return f.convert(y, orig), nil
}

func unaryFn(f *fn, fn ir.UnaryFn, alpha float64, x value) (value, error) {
	zero := func() value { return f.splat(x.t, 0) }
	c := func(v float64) value { return f.splat(x.t, v) }
	switch fn {
	case ir.Neg:
		return f.unary("stablehlo.negate", x), nil
	case ir.Abs:
		if x.dtype().IsInt() && !x.dtype().IsSigned() {
			return x, nil
		}
		return f.unary("stablehlo.abs", x), nil
	case ir.Sqrt:
		return f.unary("stablehlo.sqrt", x), nil
	case ir.Exp:
		return f.unary("stablehlo.exponential", x), nil
	case ir.Log:
		return f.unary("stablehlo.log", x), nil
	case ir.Tanh:
		return f.unary("stablehlo.tanh", x), nil
	case ir.Sigmoid:
		return f.unary("stablehlo.logistic", x), nil
	case ir.Relu:
		return f.max(x, zero()), nil
	case ir.Erf:
		return f.unary("chlo.erf", x), nil
	case ir.Not:
		return f.unary("stablehlo.not", x), nil
	case ir.Reciprocal:
		return f.div(c(1), x), nil
	case ir.Floor:
		return f.unary("stablehlo.floor", x), nil
	case ir.Ceil:
		return f.unary("stablehlo.ceil", x), nil
	case ir.Sign:
		if x.dtype().IsInt() && !x.dtype().IsSigned() {
			return f.convert(f.compare("GT", x, zero()), x.dtype()), nil
		}
		return f.unary("stablehlo.sign", x), nil
	case ir.LeakyRelu:
		return f.selectOp(f.compare("GE", x, zero()), x, f.mul(c(alpha), x)), nil
	case ir.Elu:
		return f.selectOp(f.compare("GE", x, zero()), x, f.mul(c(alpha), f.unary("stablehlo.exponential_minus_one", x))), nil
	case ir.Gelu:
		erf := f.unary("chlo.erf", f.mul(x, c(1/math.Sqrt2)))
		return f.mul(f.mul(c(0.5), x), f.add(c(1), erf)), nil
	case ir.GeluTanh:
		x3 := f.mul(f.mul(x, x), x)
		inner := f.mul(c(math.Sqrt(2/math.Pi)), f.add(x, f.mul(c(0.044715), x3)))
		return f.mul(f.mul(c(0.5), x), f.add(c(1), f.unary("stablehlo.tanh", inner))), nil
	case ir.Softplus:
		// max(x, 0) + log1p(exp(-|x|)): no overflow for large |x|.
		negAbs := f.unary("stablehlo.negate", f.unary("stablehlo.abs", x))
		return f.add(f.max(x, zero()), f.unary("stablehlo.log_plus_one", f.unary("stablehlo.exponential", negAbs))), nil
	}
	return value{}, fmt.Errorf("%w: unary %s", ir.ErrNotSupported, fn)
}

func lowerBinary(f *fn, fn ir.BinaryFn, a, b value, out ir.Type) (value, error) {
	a, b = f.broadcastTo(a, out.Shape), f.broadcastTo(b, out.Shape)
	if fn.IsLogical() {
		switch fn {
		case ir.And:
			return f.and(a, b), nil
		case ir.Or:
			return f.or(a, b), nil
		}
		return f.binary("stablehlo.xor", a, b), nil
	}
	if fn.IsComparison() {
		dirs := map[ir.BinaryFn]string{ir.Equal: "EQ", ir.Less: "LT", ir.Greater: "GT", ir.LessOrEqual: "LE", ir.GreaterOrEqual: "GE"}
		wa, wb := widen(f, a), widen(f, b)
		return f.compare(dirs[fn], wa, wb), nil
	}
	orig := a.dtype()
	if fn == ir.Pow && a.dtype() != b.dtype() {
		if a.dtype().IsFloat() {
			b = f.convert(widen(f, b), widen(f, a).dtype())
			return f.convert(f.binary("stablehlo.power", widen(f, a), b), orig), nil
		}
		// An integer base with a float exponent: float64, then truncate.
		r := f.binary("stablehlo.power", f.convert(a, ir.Float64), f.convert(b, ir.Float64))
		return f.convert(r, orig), nil
	}
	a, b = widen(f, a), widen(f, b)
	var r value
	switch fn {
	case ir.Add:
		r = f.add(a, b)
	case ir.Sub:
		r = f.sub(a, b)
	case ir.Mul:
		r = f.mul(a, b)
	case ir.Div:
		r = f.div(a, b)
		if a.dtype().IsInt() {
			// The IR gives 0 for a zero divisor (StableHLO gives -1).
			r = f.selectOp(f.compare("EQ", b, f.splat(b.t, 0)), f.splat(b.t, 0), r)
		}
	case ir.Pow:
		r = f.binary("stablehlo.power", a, b)
	case ir.Max:
		r = f.max(a, b)
	case ir.Min:
		r = f.min(a, b)
	default:
		return value{}, fmt.Errorf("%w: binary %s", ir.ErrNotSupported, fn)
	}
	return f.convert(r, orig), nil
}

// ---------------------------------------------------------------- linear algebra

func lowerMatMul(f *fn, a, b value, out ir.Type) (value, error) {
	d, err := ir.MatMulShapes(a.shape(), b.shape())
	if err != nil {
		return value{}, err
	}
	if a.rank() == 1 {
		a = f.reshape(a, ir.Shape{1, d.K})
	}
	if b.rank() == 1 {
		b = f.reshape(b, ir.Shape{d.K, 1})
	}
	nb := len(d.Batch)
	var r value
	if b.rank() == 2 {
		// x[..., M, K] · W[K, N]: one contraction, no batch dimensions.
		r = f.dotGeneral(a, b, nil, nil, []int{a.rank() - 1}, []int{0})
		r = f.broadcastTo(r, append(d.Batch.Clone(), d.M, d.N))
	} else {
		full := func(x value, rows, cols int) value {
			return f.broadcastTo(x, append(d.Batch.Clone(), rows, cols))
		}
		a, b = full(a, d.M, d.K), full(b, d.K, d.N)
		batch := make([]int, nb)
		for i := range batch {
			batch[i] = i
		}
		r = f.dotGeneral(a, b, batch, batch, []int{nb + 1}, []int{nb})
	}
	return f.reshape(r, out.Shape), nil
}

func lowerGemm(f *fn, op *ir.Gemm, in []value) (value, error) {
	a, b := in[0], in[1]
	lc, rc := 1, 0
	if op.TransA {
		lc = 0
	}
	if op.TransB {
		rc = 1
	}
	r := f.dotGeneral(a, b, nil, nil, []int{lc}, []int{rc})
	if op.Alpha != 1 {
		r = f.mul(f.splat(r.t, float64(op.Alpha)), r)
	}
	if len(in) > 2 && in[2].name != "" && op.Beta != 0 {
		c := f.broadcastTo(in[2], r.shape())
		if op.Beta != 1 {
			c = f.mul(f.splat(c.t, float64(op.Beta)), c)
		}
		r = f.add(r, c)
	}
	return r, nil
}

// lowerEinsum folds the operands left to right: each pair is one
// dot_general (labels shared and still needed are batch dimensions,
// labels shared and not needed later are contracted), labels of one
// operand that nothing else needs are summed first.
func lowerEinsum(f *fn, op *ir.Einsum, in []value, out ir.Type) (value, error) {
	for i, t := range op.Inputs {
		seen := map[rune]bool{}
		for _, r := range t {
			if seen[r] {
				return value{}, fmt.Errorf("%w: einsum %q takes a diagonal of operand %d", ir.ErrNotSupported, op.Equation, i)
			}
			seen[r] = true
		}
	}
	neededAfter := func(i int) map[rune]bool {
		m := map[rune]bool{}
		for _, r := range op.Output {
			m[r] = true
		}
		for _, t := range op.Inputs[i+1:] {
			for _, r := range t {
				m[r] = true
			}
		}
		return m
	}
	// sumUnneeded reduces away the labels of x not in keep.
	sumUnneeded := func(x value, labels string, keep func(rune) bool) (value, string) {
		var axes []int
		var rest []rune
		for d, r := range labels {
			if keep(r) {
				rest = append(rest, r)
			} else {
				axes = append(axes, d)
			}
		}
		if len(axes) == 0 {
			return x, labels
		}
		w := widen(f, x)
		s := f.reduce(w, f.scalarConst(w.dtype(), 0), reduceAdd, axes)
		return f.convert(s, x.dtype()), string(rest)
	}
	acc, labels := in[0], op.Inputs[0]
	for i := 1; i < len(in); i++ {
		x, xl := in[i], op.Inputs[i]
		need := neededAfter(i)
		acc, labels = sumUnneeded(acc, labels, func(r rune) bool { return need[r] || strings.ContainsRune(xl, r) })
		x, xl = sumUnneeded(x, xl, func(r rune) bool { return need[r] || strings.ContainsRune(labels, r) })
		var lb, rb, lc, rc []int
		var batchL string
		for d, r := range labels {
			if j := strings.IndexRune(xl, r); j >= 0 {
				if need[r] {
					lb, rb = append(lb, d), append(rb, j)
					batchL += string(r)
				} else {
					lc, rc = append(lc, d), append(rc, j)
				}
			}
		}
		var free string
		for _, r := range labels {
			if !strings.ContainsRune(xl, r) {
				free += string(r)
			}
		}
		for _, r := range xl {
			if !strings.ContainsRune(labels, r) {
				free += string(r)
			}
		}
		acc = f.dotGeneral(acc, x, lb, rb, lc, rc)
		labels = batchL + free
	}
	acc, labels = sumUnneeded(acc, labels, func(r rune) bool { return strings.ContainsRune(op.Output, r) })
	perm := make([]int, len(op.Output))
	for i, r := range op.Output {
		perm[i] = strings.IndexRune(labels, r)
		if perm[i] < 0 {
			return value{}, fmt.Errorf("%w: einsum %q output label %q not in any operand", ir.ErrNotSupported, op.Equation, r)
		}
	}
	return f.reshape(f.transpose(acc, perm), out.Shape), nil
}

// ---------------------------------------------------------------- data movement

func lowerSplit(f *fn, op *ir.Split, x value) []value {
	out := make([]value, len(op.Sizes))
	start := 0
	for i, size := range op.Sizes {
		lo, hi, st := make([]int, x.rank()), x.shape().Clone(), make([]int, x.rank())
		for d := range st {
			st[d] = 1
		}
		lo[op.Axis], hi[op.Axis] = start, start+size
		out[i] = f.slice(x, lo, hi, st)
		start += size
	}
	return out
}

func lowerSlice(f *fn, op *ir.Slice, x value) value {
	var rev []int
	for d, s := range op.Steps {
		if s < 0 {
			rev = append(rev, d)
		}
	}
	x2 := f.reverse(x, rev)
	r := x.rank()
	lo, hi, st := make([]int, r), make([]int, r), make([]int, r)
	for d := range r {
		n, step, start := op.Sizes[d], op.Steps[d], op.Starts[d]
		if step < 0 {
			start, step = x.shape()[d]-1-start, -step
		}
		lo[d], st[d] = start, step
		hi[d] = start
		if n > 0 {
			hi[d] = start + (n-1)*step + 1
		}
	}
	return f.slice(x2, lo, hi, st)
}

// normIndex makes negative indices count from the end of an axis of size n.
func normIndex(f *fn, idx value, n int) value {
	neg := f.compare("LT", idx, f.splat(idx.t, 0))
	return f.selectOp(neg, f.add(idx, f.splat(idx.t, float64(n))), idx)
}

// lowerGather is x[a..., idx[i...], b...]. Out-of-range indices, an
// error for the reference, are clamped by StableHLO.
func lowerGather(f *fn, axis int, x, idx value) value {
	idx = normIndex(f, idx, x.shape()[axis])
	ni := idx.rank()
	var offset []int
	for d := range x.rank() {
		switch {
		case d < axis:
			offset = append(offset, d)
		case d > axis:
			offset = append(offset, d-1+ni)
		}
	}
	sizes := x.shape().Clone()
	sizes[axis] = 1
	shape := append(append(x.shape()[:axis:axis], idx.shape()...), x.shape()[axis+1:]...)
	attrs := "dimension_numbers = #stablehlo.gather<" + dimFields("offset_dims", offset, "collapsed_slice_dims", []int{axis},
		"start_index_map", []int{axis}, "index_vector_dim", ni) + ">, slice_sizes = " + i64Array(sizes) + ", indices_are_sorted = false"
	return f.op1("stablehlo.gather", []value{x, idx}, attrs, ir.Type{DType: x.dtype(), Shape: shape})
}

// lowerGatherElements builds a full index vector per output element (the
// index on axis, the element's own coordinate elsewhere) and gathers
// single elements.
func lowerGatherElements(f *fn, axis int, x, idx value) value {
	idx = normIndex(f, idx, x.shape()[axis])
	r := x.rank()
	col := append(idx.shape().Clone(), 1)
	parts := make([]value, r)
	for d := range r {
		var p value
		if d == axis {
			p = idx
		} else {
			p = f.iota(idx.t, d)
		}
		parts[d] = f.reshape(p, col)
	}
	full := f.concatenate(r, parts)
	all := make([]int, r)
	ones := make([]int, r)
	for d := range r {
		all[d], ones[d] = d, 1
	}
	attrs := "dimension_numbers = #stablehlo.gather<" + dimFields("collapsed_slice_dims", all, "start_index_map", all, "index_vector_dim", r) +
		">, slice_sizes = " + i64Array(ones) + ", indices_are_sorted = false"
	return f.op1("stablehlo.gather", []value{x, full}, attrs, ir.Type{DType: x.dtype(), Shape: idx.shape().Clone()})
}

func lowerTrilu(f *fn, op *ir.Trilu, x value) value {
	r := x.rank()
	it := ir.Type{DType: ir.Int64, Shape: x.shape()}
	diff := f.sub(f.iota(it, r-1), f.iota(it, r-2)) // j - i
	dir := "LE"
	if op.Upper {
		dir = "GE"
	}
	keep := f.compare(dir, diff, f.splat(it, float64(op.K)))
	return f.selectOp(keep, x, f.splat(x.t, 0))
}

// ---------------------------------------------------------------- reductions

func reduceInit(f *fn, d ir.DType, kind reduceKind) value {
	switch kind {
	case reduceAdd:
		return f.scalarConst(d, 0)
	case reduceMul:
		return f.scalarConst(d, 1)
	case reduceAnd:
		return f.scalarConst(d, 1)
	case reduceOr:
		return f.scalarConst(d, 0)
	}
	lo, hi := typeRange(d)
	if kind == reduceMax {
		return f.scalarConst(d, lo)
	}
	return f.scalarConst(d, hi)
}

// typeRange is the smallest and largest value of d (±Inf for floats).
func typeRange(d ir.DType) (float64, float64) {
	switch d {
	case ir.Int8:
		return math.MinInt8, math.MaxInt8
	case ir.Int16:
		return math.MinInt16, math.MaxInt16
	case ir.Int32:
		return math.MinInt32, math.MaxInt32
	case ir.Int64:
		return math.MinInt64, math.MaxInt64
	case ir.Uint8:
		return 0, math.MaxUint8
	case ir.Uint16:
		return 0, math.MaxUint16
	case ir.Uint32:
		return 0, math.MaxUint32
	case ir.Uint64:
		return 0, math.MaxUint64
	case ir.Bool:
		return 0, 1
	}
	return math.Inf(-1), math.Inf(1)
}

func lowerReduce(f *fn, op *ir.Reduce, x value, out ir.Type) (value, error) {
	orig := x.dtype()
	x = widen(f, x)
	kind := map[ir.ReduceFn]reduceKind{ir.ReduceSum: reduceAdd, ir.ReduceMean: reduceAdd, ir.ReduceMax: reduceMax, ir.ReduceMin: reduceMin, ir.ReduceProd: reduceMul}[op.Fn]
	if x.dtype() == ir.Bool {
		switch op.Fn {
		case ir.ReduceMax:
			kind = reduceOr
		case ir.ReduceMin:
			kind = reduceAnd
		default:
			return value{}, fmt.Errorf("%w: %s of bools", ir.ErrNotSupported, op.Fn)
		}
	}
	r := f.reduce(x, reduceInit(f, x.dtype(), kind), kind, op.Axes)
	if op.Fn == ir.ReduceMean {
		count := 1
		for _, a := range op.Axes {
			count *= x.shape()[a]
		}
		r = f.div(r, f.splat(r.t, float64(count)))
	}
	return f.reshape(f.convert(r, orig), out.Shape), nil
}

// keepDims reduces with KeepDims semantics: the reduced axes stay as 1s.
func keepDims(f *fn, x value, kind reduceKind, axes []int) value {
	r := f.reduce(x, reduceInit(f, x.dtype(), kind), kind, axes)
	shape := x.shape().Clone()
	for _, a := range axes {
		shape[a] = 1
	}
	return f.reshape(r, shape)
}

// softmax along axis; with log it is log-softmax.
func softmax(f *fn, x value, axis int, log bool) value {
	m := f.broadcastTo(keepDims(f, x, reduceMax, []int{axis}), x.shape())
	shifted := f.sub(x, m)
	e := f.unary("stablehlo.exponential", shifted)
	s := f.broadcastTo(keepDims(f, e, reduceAdd, []int{axis}), x.shape())
	if log {
		return f.sub(shifted, f.unary("stablehlo.log", s))
	}
	return f.div(e, s)
}

func lowerLayerNorm(f *fn, op *ir.LayerNorm, in []value, nout int) []value {
	orig := in[0].dtype()
	x := widen(f, in[0])
	var axes []int
	count := 1
	for a := op.Axis; a < x.rank(); a++ {
		axes = append(axes, a)
		count *= x.shape()[a]
	}
	inv := f.splat(x.t, 1/float64(count))
	mean := f.broadcastTo(keepDims(f, x, reduceAdd, axes), x.shape())
	mean = f.mul(mean, inv)
	centered := f.sub(x, mean)
	variance := f.mul(f.broadcastTo(keepDims(f, f.mul(centered, centered), reduceAdd, axes), x.shape()), inv)
	invStd := f.unary("stablehlo.rsqrt", f.add(variance, f.splat(x.t, float64(op.Epsilon))))
	y := f.mul(centered, invStd)
	y = f.mul(y, f.broadcastTo(widen(f, in[1]), x.shape()))
	if len(in) > 2 && in[2].name != "" {
		y = f.add(y, f.broadcastTo(widen(f, in[2]), x.shape()))
	}
	out := []value{f.convert(y, orig)}
	if nout > 1 {
		stat := x.shape().Clone()
		for _, a := range axes {
			stat[a] = 1
		}
		first := make([]int, x.rank())
		ones := make([]int, x.rank())
		for d := range ones {
			ones[d] = 1
		}
		pick := func(v value) value { return f.convert(f.slice(v, first, stat, ones), orig) }
		out = append(out, pick(mean))
		if nout > 2 {
			out = append(out, pick(invStd))
		}
	}
	return out
}

// lowerCumSum is a log-step (Hillis–Steele) scan: log2(n) shifted adds.
func lowerCumSum(f *fn, op *ir.CumSum, x value) value {
	axis := op.Axis
	n := x.shape()[axis]
	rev := []int(nil)
	if op.Reverse {
		rev = []int{axis}
	}
	acc := f.reverse(x, rev)
	zeros := make([]int, x.rank())
	ones := make([]int, x.rank())
	for d := range ones {
		ones[d] = 1
	}
	zero := f.scalarConst(x.dtype(), 0)
	shift := func(v value, s int) value {
		lo := slices.Clone(zeros)
		lo[axis] = s
		hi := slices.Clone(zeros)
		p := f.pad(v, zero, lo, hi, zeros)
		lim := p.shape().Clone()
		lim[axis] = n
		return f.slice(p, zeros, lim, ones)
	}
	for s := 1; s < n; s *= 2 {
		acc = f.add(acc, shift(acc, s))
	}
	if op.Exclusive {
		acc = shift(acc, 1)
	}
	return f.reverse(acc, rev)
}

// lowerTopK sorts (stable, by value then index) along the axis and keeps
// the first K. A NaN ranks above every number, as in the reference: a
// float comparison alone leaves NaN unordered.
func lowerTopK(f *fn, op *ir.TopK, x value) []value {
	idx := f.iota(ir.Type{DType: ir.Int64, Shape: x.shape()}, op.Axis)
	dir := "GT"
	if !op.Largest {
		dir = "LT"
	}
	st := scalarType(x.dtype())
	it := scalarType(ir.Int64)
	cmp := f.region([]ir.Type{st, st, it, it}, func(r *fn, a []value) []value {
		before := r.compare(dir, a[0], a[1])
		if !x.dtype().IsFloat() {
			return []value{before}
		}
		// Largest: a NaN before a number; smallest: a number before a NaN.
		nanA, numB := r.compare("NE", a[0], a[0]), r.compare("EQ", a[1], a[1])
		if !op.Largest {
			nanA, numB = r.compare("EQ", a[0], a[0]), r.compare("NE", a[1], a[1])
		}
		return []value{r.or(before, r.and(nanA, numB))}
	})
	sorted := f.op("stablehlo.sort", []value{x, idx}, fmt.Sprintf("dimension = %d : i64, is_stable = true", op.Axis), []string{cmp}, x.t, idx.t)
	lo := make([]int, x.rank())
	hi := x.shape().Clone()
	st1 := make([]int, x.rank())
	for d := range st1 {
		st1[d] = 1
	}
	hi[op.Axis] = op.K
	return []value{f.slice(sorted[0], lo, hi, st1), f.slice(sorted[1], lo, hi, st1)}
}

// lowerDropout multiplies by the op's keep mask, which a seed fixes: it
// is computed here with the reference generator and embedded, so every
// backend drops the same elements.
func lowerDropout(f *fn, op *ir.Dropout, x value, nout int) []value {
	keep := make([]bool, x.shape().Size())
	ir.DropoutMask(keep, op.Ratio, op.Seed)
	mask := f.constant(ir.FromBools(x.shape(), keep))
	w := widen(f, x)
	scaled := f.mul(w, f.splat(w.t, 1/(1-float64(op.Ratio))))
	y := f.convert(f.selectOp(mask, scaled, f.splat(w.t, 0)), x.dtype())
	if nout > 1 {
		return []value{y, mask}
	}
	return []value{y}
}

// lowerNLLLoss picks the target's log-probability with a one-hot mask
// over the class axis (1).
func lowerNLLLoss(f *fn, op *ir.NLLLoss, in []value, nout int) []value {
	orig := in[0].dtype()
	x := widen(f, in[0])
	if op.Softmax {
		x = softmax(f, x, 1, true)
	}
	target := in[1]
	classes := x.shape()[1]
	// Broadcast the target [N, d...] to x's shape [N, C, d...].
	tdims := []int{0}
	for d := 2; d < x.rank(); d++ {
		tdims = append(tdims, d)
	}
	tb := f.broadcastInDim(target, x.shape(), tdims)
	cls := f.iota(ir.Type{DType: target.dtype(), Shape: x.shape()}, 1)
	onehot := f.compare("EQ", tb, cls)
	zero := f.splat(x.t, 0)
	picked := f.reduce(f.selectOp(onehot, x, zero), f.scalarConst(x.dtype(), 0), reduceAdd, []int{1})
	var weight value
	if len(in) > 2 && in[2].name != "" {
		w := f.broadcastInDim(widen(f, in[2]), x.shape(), []int{1})
		weight = f.reduce(f.selectOp(onehot, w, zero), f.scalarConst(x.dtype(), 0), reduceAdd, []int{1})
	} else {
		weight = f.splat(picked.t, 1)
	}
	if op.HasIgnore {
		valid := f.compare("NE", target, f.splat(target.t, float64(op.IgnoreIndex)))
		weight = f.selectOp(valid, weight, f.splat(weight.t, 0))
	} else if classes > 0 {
		// Out-of-range targets pick nothing; the weight stays.
	}
	loss := f.unary("stablehlo.negate", f.mul(picked, weight))
	all := make([]int, loss.rank())
	for d := range all {
		all[d] = d
	}
	var res value
	switch op.Reduction {
	case ir.ReductionNone:
		res = loss
	case ir.ReductionSum:
		res = f.reduce(loss, f.scalarConst(x.dtype(), 0), reduceAdd, all)
	default:
		s := f.reduce(loss, f.scalarConst(x.dtype(), 0), reduceAdd, all)
		res = f.div(s, f.reduce(weight, f.scalarConst(x.dtype(), 0), reduceAdd, all))
	}
	out := []value{f.convert(res, orig)}
	if nout > 1 {
		out = append(out, f.convert(x, orig))
	}
	return out
}

// ---------------------------------------------------------------- convolution and pooling

// convDims renders the NC<spatial> layout for k spatial axes.
func convDims(k int) string {
	sp := make([]string, k)
	for i := range sp {
		sp[i] = fmt.Sprint(i)
	}
	s := strings.Join(sp, ", ")
	return fmt.Sprintf("#stablehlo.conv<[b, f, %s]x[o, i, %s]->[b, f, %s]>", s, s, s)
}

func padding(pads []int) (string, int) {
	k := len(pads) / 2
	rows := make([]string, k)
	for i := range k {
		rows[i] = fmt.Sprintf("[%d, %d]", pads[i], pads[k+i])
	}
	return fmt.Sprintf("dense<[%s]> : tensor<%dx2xi64>", strings.Join(rows, ", "), k), k
}

func lowerConv(f *fn, op *ir.Conv, in []value, out ir.Type) (value, error) {
	x, w := widen(f, in[0]), widen(f, in[1])
	k := x.rank() - 2
	pad, _ := padding(op.Pads)
	if k == 0 {
		return value{}, fmt.Errorf("%w: Conv without spatial axes", ir.ErrNotSupported)
	}
	attrs := fmt.Sprintf("dimension_numbers = %s, window_strides = %s, padding = %s, lhs_dilation = %s, rhs_dilation = %s, feature_group_count = %d : i64, batch_group_count = 1 : i64, precision_config = [#stablehlo<precision HIGHEST>, #stablehlo<precision HIGHEST>]",
		convDims(k), i64Array(op.Strides), pad, i64Array(onesN(k)), i64Array(op.Dilations), op.Group)
	r := f.op1("stablehlo.convolution", []value{x, w}, attrs, ir.Type{DType: x.dtype(), Shape: out.Shape.Clone()})
	if len(in) > 2 && in[2].name != "" {
		r = f.add(r, f.broadcastInDim(widen(f, in[2]), r.shape(), []int{1}))
	}
	return f.convert(r, out.DType), nil
}

func onesN(n int) []int {
	o := make([]int, n)
	for i := range o {
		o[i] = 1
	}
	return o
}

// reduceWindow pools x with the given body over windows on the spatial
// axes (NC<spatial>); pads are begin pads then end pads.
func reduceWindow(f *fn, x, init value, kind reduceKind, op *ir.Pool, out ir.Shape, extraHigh []int) value {
	k := x.rank() - 2
	dims := append([]int{1, 1}, op.Kernel...)
	strides := append([]int{1, 1}, op.Strides...)
	dil := append([]int{1, 1}, op.Dilations...)
	rows := []string{"[0, 0]", "[0, 0]"}
	for i := range k {
		rows = append(rows, fmt.Sprintf("[%d, %d]", op.Pads[i], op.Pads[k+i]+extraHigh[i]))
	}
	st := scalarType(x.dtype())
	body := f.region([]ir.Type{st, st}, func(r *fn, a []value) []value {
		return []value{r.binary(reduceBodies[kind], a[0], a[1])}
	})
	attrs := fmt.Sprintf("window_dimensions = %s, window_strides = %s, window_dilations = %s, padding = dense<[%s]> : tensor<%dx2xi64>",
		i64Array(dims), i64Array(strides), i64Array(dil), strings.Join(rows, ", "), x.rank())
	return f.op("stablehlo.reduce_window", []value{x, init}, attrs, []string{body}, ir.Type{DType: x.dtype(), Shape: out.Clone()})[0]
}

func lowerPool(f *fn, op *ir.Pool, x0 value, out ir.Type) (value, error) {
	x := widen(f, x0)
	k := x.rank() - 2
	if len(op.Dilations) == 0 {
		op = &ir.Pool{Max: op.Max, Kernel: op.Kernel, Strides: op.Strides, Pads: op.Pads, Dilations: onesN(k), CeilMode: op.CeilMode, CountIncludePad: op.CountIncludePad}
	}
	// Ceil mode: extend the end padding so reduce_window yields the
	// output size the IR inferred (windows there see only padding).
	extra := make([]int, k)
	for i := range k {
		in := x.shape()[2+i] + op.Pads[i] + op.Pads[k+i]
		span := (op.Kernel[i]-1)*op.Dilations[i] + 1
		need := (out.Shape[2+i]-1)*op.Strides[i] + span
		extra[i] = max(need-in, 0)
	}
	if op.Max {
		r := reduceWindow(f, x, reduceInit(f, x.dtype(), reduceMax), reduceMax, op, out.Shape, extra)
		return f.convert(r, out.DType), nil
	}
	sum := reduceWindow(f, x, f.scalarConst(x.dtype(), 0), reduceAdd, op, out.Shape, extra)
	var count value
	if op.CountIncludePad {
		// Positions inside the padded input (not the ceil-mode extension).
		padded := f.pad(f.splat(x.t, 1), f.scalarConst(x.dtype(), 1), append([]int{0, 0}, op.Pads[:k]...), append([]int{0, 0}, op.Pads[k:]...), make([]int, x.rank()))
		noPad := &ir.Pool{Kernel: op.Kernel, Strides: op.Strides, Pads: make([]int, 2*k), Dilations: op.Dilations}
		count = reduceWindow(f, padded, f.scalarConst(x.dtype(), 0), reduceAdd, noPad, out.Shape, extra)
	} else {
		count = reduceWindow(f, f.splat(x.t, 1), f.scalarConst(x.dtype(), 0), reduceAdd, op, out.Shape, extra)
	}
	return f.convert(f.div(sum, count), out.DType), nil
}

func lowerBatchNorm(f *fn, op *ir.BatchNorm, in []value, nout int) []value {
	orig := in[0].dtype()
	x := widen(f, in[0])
	perChannel := func(v value) value { return f.broadcastInDim(widen(f, v), x.shape(), []int{1}) }
	mean, variance := widen(f, in[3]), widen(f, in[4])
	var out []value
	if op.Training {
		var axes []int
		count := 1
		for d := range x.rank() {
			if d != 1 {
				axes = append(axes, d)
				count *= x.shape()[d]
			}
		}
		inv := f.splat(mean.t, 1/float64(count))
		bm := f.mul(f.reduce(x, f.scalarConst(x.dtype(), 0), reduceAdd, axes), inv)
		c := f.sub(x, f.broadcastInDim(bm, x.shape(), []int{1}))
		bv := f.mul(f.reduce(f.mul(c, c), f.scalarConst(x.dtype(), 0), reduceAdd, axes), inv)
		mom := f.splat(mean.t, float64(op.Momentum))
		oneMinus := f.splat(mean.t, 1-float64(op.Momentum))
		runMean := f.add(f.mul(mean, mom), f.mul(bm, oneMinus))
		runVar := f.add(f.mul(variance, mom), f.mul(bv, oneMinus))
		mean, variance = bm, bv
		out = []value{{}, f.convert(runMean, in[3].dtype()), f.convert(runVar, in[4].dtype())}
	} else {
		out = []value{{}}
	}
	invStd := f.unary("stablehlo.rsqrt", f.add(perChannel(variance), f.splat(x.t, float64(op.Epsilon))))
	y := f.mul(f.mul(f.sub(x, perChannel(mean)), invStd), perChannel(in[1]))
	y = f.add(y, perChannel(in[2]))
	out[0] = f.convert(y, orig)
	return out[:min(max(nout, 1), len(out))]
}
