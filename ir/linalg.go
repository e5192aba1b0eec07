package ir

import (
	"fmt"
	"slices"
	"strings"
)

// ---------------------------------------------------------------- MatMul

// MatMul is numpy's matmul: the last two dimensions multiply as matrices
// (M×K times K×N) and the leading (batch) dimensions broadcast; a 1-D
// first operand is a row vector and a 1-D second operand a column vector,
// their unit dimension removed from the result.
type MatMul struct{}

func (op *MatMul) Name() string { return "MatMul" }

// MatMulDims describes a MatMul for given operand shapes: the broadcast
// batch shape, the matrix sizes, the output shape, and each operand's
// batch shape padded to the batch rank (for broadcasting strides).
type MatMulDims struct {
	Batch        Shape
	ABatch       Shape
	BBatch       Shape
	M, K, N      int
	Out          Shape
	ARank, BRank int
}

// MatMulShapes computes MatMulDims, or says why the shapes do not multiply.
func MatMulShapes(a, b Shape) (MatMulDims, error) {
	var d MatMulDims
	if len(a) == 0 || len(b) == 0 {
		return d, fmt.Errorf("MatMul of a scalar: %v × %v", a, b)
	}
	d.ARank, d.BRank = len(a), len(b)
	as, bs := a, b
	if len(a) == 1 {
		as = Shape{1, a[0]}
	}
	if len(b) == 1 {
		bs = Shape{b[0], 1}
	}
	d.M, d.K = as[len(as)-2], as[len(as)-1]
	if bs[len(bs)-2] != d.K {
		return d, fmt.Errorf("MatMul inner dimensions differ: %v × %v", a, b)
	}
	d.N = bs[len(bs)-1]
	batch, err := BroadcastShapes(as[:len(as)-2], bs[:len(bs)-2])
	if err != nil {
		return d, fmt.Errorf("MatMul batch dimensions %v and %v do not broadcast", a, b)
	}
	d.Batch = batch
	d.ABatch = padLeft(as[:len(as)-2], len(batch))
	d.BBatch = padLeft(bs[:len(bs)-2], len(batch))
	d.Out = batch.Clone()
	if len(a) > 1 {
		d.Out = append(d.Out, d.M)
	}
	if len(b) > 1 {
		d.Out = append(d.Out, d.N)
	}
	return d, nil
}

func padLeft(s Shape, rank int) Shape {
	out := make(Shape, rank)
	for i := range out {
		out[i] = 1
	}
	copy(out[rank-len(s):], s)
	return out
}

func (op *MatMul) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	a, b := in[0], in[1]
	if a.DType != b.DType || !a.DType.computable() {
		return nil, fmt.Errorf("operands are %s and %s, want one number type", a.DType, b.DType)
	}
	d, err := MatMulShapes(a.Shape, b.Shape)
	if err != nil {
		return nil, err
	}
	return []Type{{a.DType, d.Out}}, nil
}

func (op *MatMul) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	a, b, y := in[0], in[1], out[0]
	d, err := MatMulShapes(a.shape, b.shape)
	if err != nil {
		return err
	}
	av, bv := Convert(a, Float64).Float64s(), Convert(b, Float64).Float64s()
	res := make([]float64, y.Len())
	aStr := BroadcastStrides(d.ABatch, d.Batch)
	bStr := BroadcastStrides(d.BBatch, d.Batch)
	mk, kn, mn := d.M*d.K, d.K*d.N, d.M*d.N
	pos := make([]int, len(d.Batch))
	for bi := range d.Batch.Size() {
		ao, bo := 0, 0
		for i, p := range pos {
			ao += p * aStr[i] * mk
			bo += p * bStr[i] * kn
		}
		for i := range d.M {
			for j := range d.N {
				var s float64
				for p := range d.K {
					s += av[ao+i*d.K+p] * bv[bo+p*d.N+j]
				}
				res[bi*mn+i*d.N+j] = s
			}
		}
		for i := len(pos) - 1; i >= 0; i-- {
			pos[i]++
			if pos[i] < d.Batch[i] {
				break
			}
			pos[i] = 0
		}
	}
	storeNumbers(y, res)
	return nil
}

// storeNumbers writes float64 results into a tensor of any number type
// (integers by truncation).
func storeNumbers(t *Tensor, v []float64) {
	if t.dtype.IsFloat() {
		storeFloats(t, v)
		return
	}
	for i, x := range v {
		storeFloat(t, i, x, true, RoundUp)
	}
}

// ---------------------------------------------------------------- Gemm

// Gemm is Alpha·op(A)·op(B) + Beta·C for 2-D A and B (op transposes when
// TransA/TransB); the optional C broadcasts to the M×N result.
type Gemm struct {
	TransA, TransB bool
	Alpha, Beta    float32
}

func (op *Gemm) Name() string { return "Gemm" }

func (op *Gemm) dims(a, b Shape) (m, k, n int, err error) {
	if len(a) != 2 || len(b) != 2 {
		return 0, 0, 0, fmt.Errorf("Gemm operands %v and %v, want 2-D", a, b)
	}
	m, k = a[0], a[1]
	if op.TransA {
		m, k = k, m
	}
	kb, n := b[0], b[1]
	if op.TransB {
		kb, n = n, kb
	}
	if k != kb {
		return 0, 0, 0, fmt.Errorf("Gemm inner dimensions differ: %v × %v (transA %v, transB %v)", a, b, op.TransA, op.TransB)
	}
	return m, k, n, nil
}

func (op *Gemm) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 3); err != nil {
		return nil, err
	}
	a, b := in[0], in[1]
	if a.DType != b.DType || !a.DType.computable() {
		return nil, fmt.Errorf("operands are %s and %s, want one number type", a.DType, b.DType)
	}
	m, _, n, err := op.dims(a.Shape, b.Shape)
	if err != nil {
		return nil, err
	}
	if c, ok := optional(in, 2); ok {
		if c.DType != a.DType {
			return nil, fmt.Errorf("C is %s, want %s", c.DType, a.DType)
		}
		if s, err := BroadcastShapes(c.Shape, Shape{m, n}); err != nil || !s.Equal(Shape{m, n}) {
			return nil, fmt.Errorf("C has shape %v, not broadcastable to [%d,%d]", c.Shape, m, n)
		}
	}
	return []Type{{a.DType, Shape{m, n}}}, nil
}

func (op *Gemm) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	a, b := in[0], in[1]
	m, k, n, err := op.dims(a.shape, b.shape)
	if err != nil {
		return err
	}
	av, bv := Convert(a, Float64).Float64s(), Convert(b, Float64).Float64s()
	var cv []float64
	if c := optIn(in, 2); c != nil {
		cv = expandTo(Convert(c, Float64), Shape{m, n})
	}
	res := make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s float64
			for p := range k {
				var x, y float64
				if op.TransA {
					x = av[p*m+i]
				} else {
					x = av[i*k+p]
				}
				if op.TransB {
					y = bv[j*k+p]
				} else {
					y = bv[p*n+j]
				}
				s += x * y
			}
			s *= float64(op.Alpha)
			if cv != nil {
				s += float64(op.Beta) * cv[i*n+j]
			}
			res[i*n+j] = s
		}
	}
	storeNumbers(out[0], res)
	return nil
}

// ---------------------------------------------------------------- Einsum

// Einsum is Einstein summation. Import parses ONNX's equation and expands
// the ellipsis, so each operand and the output are lists of single-letter
// labels (Inputs[i] has one label per dimension of input i); labels that
// are not in Output are summed over; a label repeated within an operand
// takes its diagonal; Output names each of its labels once.
type Einsum struct {
	Equation string // as written, for messages
	Inputs   []string
	Output   string
}

func (op *Einsum) Name() string { return "Einsum" }

// ParseEinsum normalizes an equation for operands of the given ranks.
func ParseEinsum(eq string, ranks []int) (*Einsum, error) {
	eq = strings.ReplaceAll(eq, " ", "")
	lhs, rhs, explicit := strings.Cut(eq, "->")
	terms := strings.Split(lhs, ",")
	if len(terms) != len(ranks) {
		return nil, fmt.Errorf("einsum %q has %d operands, got %d inputs", eq, len(terms), len(ranks))
	}
	used := map[rune]bool{}
	for _, r := range strings.ReplaceAll(eq, "...", "") {
		used[r] = true
	}
	// Ellipsis labels: uppercase-free placeholders chosen among unused
	// letters, the same for every operand (right-aligned).
	ellRank := 0
	for i, t := range terms {
		if strings.Contains(t, "...") {
			n := ranks[i] - (len(t) - 3)
			if n < 0 {
				return nil, fmt.Errorf("einsum %q: operand %d has rank %d, fewer than its labels", eq, i, ranks[i])
			}
			ellRank = max(ellRank, n)
		}
	}
	var ell []rune
	for r := 'A'; len(ell) < ellRank && r <= 'z'; r++ {
		if !used[r] && (r <= 'Z' || r >= 'a') {
			ell = append(ell, r)
		}
	}
	if len(ell) < ellRank {
		return nil, fmt.Errorf("einsum %q: too many dimensions", eq)
	}
	expand := func(t string, rank int) (string, error) {
		if !strings.Contains(t, "...") {
			if rank >= 0 && len(t) != rank {
				return "", fmt.Errorf("einsum %q: term %q for an operand of rank %d", eq, t, rank)
			}
			return t, nil
		}
		n := ellRank
		if rank >= 0 {
			n = rank - (len(t) - 3)
		}
		return strings.Replace(t, "...", string(ell[ellRank-n:]), 1), nil
	}
	op := &Einsum{Equation: eq}
	for i, t := range terms {
		e, err := expand(t, ranks[i])
		if err != nil {
			return nil, err
		}
		for _, r := range e {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return nil, fmt.Errorf("einsum %q: bad label %q", eq, r)
			}
		}
		op.Inputs = append(op.Inputs, e)
	}
	if explicit {
		if ellRank > 0 && !strings.Contains(rhs, "...") {
			return nil, fmt.Errorf("einsum %q: the operands have ellipsis dimensions but the output has no \"...\" for them", eq)
		}
		o, err := expand(rhs, -1)
		if err != nil {
			return nil, err
		}
		op.Output = o
	} else {
		// Implicit output: the ellipsis dimensions, then the labels that
		// appear exactly once, in alphabetical order.
		count := map[rune]int{}
		for _, t := range op.Inputs {
			for _, r := range t {
				count[r]++
			}
		}
		out := string(ell)
		for r := 'A'; r <= 'z'; r++ {
			if count[r] == 1 && !strings.ContainsRune(string(ell), r) {
				out += string(r)
			}
		}
		op.Output = out
	}
	return op, nil
}

// sizes maps every label to its dimension (broadcasting 1s).
func (op *Einsum) sizes(in []Type) (map[rune]int, error) {
	size := map[rune]int{}
	if len(in) != len(op.Inputs) {
		return nil, fmt.Errorf("einsum %q wants %d inputs, got %d", op.Equation, len(op.Inputs), len(in))
	}
	for i, t := range in {
		if len(t.Shape) != len(op.Inputs[i]) {
			return nil, fmt.Errorf("einsum %q: input %d has rank %d, want %d", op.Equation, i, len(t.Shape), len(op.Inputs[i]))
		}
		for d, r := range op.Inputs[i] {
			n := t.Shape[d]
			s, ok := size[r]
			switch {
			case !ok || s == 1:
				size[r] = n
			case s == n || n == 1:
			default:
				return nil, fmt.Errorf("einsum %q: label %c has sizes %d and %d", op.Equation, r, s, n)
			}
		}
	}
	return size, nil
}

func (op *Einsum) Infer(in []Type) ([]Type, error) {
	size, err := op.sizes(in)
	if err != nil {
		return nil, err
	}
	for i := 1; i < len(in); i++ {
		if in[i].DType != in[0].DType {
			return nil, fmt.Errorf("einsum operands have dtypes %s and %s", in[0].DType, in[i].DType)
		}
	}
	if !in[0].DType.computable() {
		return nil, fmt.Errorf("einsum on %s is not supported", in[0].DType)
	}
	if hasRepeatedLabel(op.Output) {
		return nil, fmt.Errorf("einsum %q: the output repeats a label", op.Equation)
	}
	shape := Shape{}
	for _, r := range op.Output {
		n, ok := size[r]
		if !ok {
			return nil, fmt.Errorf("einsum %q: output label %c is not in any input", op.Equation, r)
		}
		shape = append(shape, n)
	}
	return []Type{{in[0].DType, shape}}, nil
}

// gradRule: the gradient with respect to operand k is itself an einsum,
// of dy (labelled as the output) and the other operands, whose output is
// labelled as operand k. Where operand k repeats a label (a diagonal),
// each repeat gets a fresh label tied to the first by an identity matrix;
// a label of operand k that no other term has comes from a vector of
// ones; axes of operand k broadcast from 1 are summed back to 1.
func (op *Einsum) gradRule(d *differ, c *gradCtx) error {
	dy := c.dy[0]
	if hasRepeatedLabel(op.Output) {
		return c.unsupported("Einsum with a repeated output label")
	}
	size, err := op.sizes(valueTypes(c.n.Inputs))
	if err != nil {
		return err
	}
	used := map[rune]bool{}
	for _, t := range append(slices.Clone(op.Inputs), op.Output) {
		for _, r := range t {
			used[r] = true
		}
	}
	next := 'A'
	fresh := func() (rune, bool) {
		for ; next <= 'z'; next++ {
			if !used[next] && (next <= 'Z' || next >= 'a') {
				used[next] = true
				return next, true
			}
		}
		return 0, false
	}
	for k, x := range c.n.Inputs {
		if !c.needs(k) {
			continue
		}
		terms, operands := []string{op.Output}, []*Value{dy}
		for j, t := range op.Inputs {
			if j != k {
				terms, operands = append(terms, t), append(operands, c.in(j))
			}
		}
		var out []rune
		seen := map[rune]bool{}
		for _, r := range op.Inputs[k] {
			l := r
			if seen[r] {
				var ok bool
				if l, ok = fresh(); !ok {
					return c.unsupported("Einsum with more labels than letters")
				}
				terms = append(terms, string([]rune{r, l}))
				operands = append(operands, d.constant(identity(x.DType, size[r])))
			}
			seen[r] = true
			out = append(out, l)
		}
		for _, r := range op.Inputs[k] {
			if !slices.ContainsFunc(terms, func(t string) bool { return strings.ContainsRune(t, r) }) {
				terms = append(terms, string(r))
				operands = append(operands, d.constant(filled(x.DType, Shape{size[r]}, 1)))
			}
		}
		eq := strings.Join(terms, ",") + "->" + string(out)
		g := d.emit1(&Einsum{Equation: eq, Inputs: terms, Output: string(out)}, operands...)
		var spread []int
		for a, n := range x.Shape {
			if n == 1 && g.Shape[a] != 1 {
				spread = append(spread, a)
			}
		}
		if spread != nil {
			g = d.emit1(&Reduce{Fn: ReduceSum, Axes: spread, KeepDims: true}, g)
		}
		c.add(k, g)
	}
	return nil
}

func hasRepeatedLabel(t string) bool {
	seen := map[rune]bool{}
	for _, r := range t {
		if seen[r] {
			return true
		}
		seen[r] = true
	}
	return false
}

// identity is the n×n identity matrix of dtype dt.
func identity(dt DType, n int) *Tensor {
	t := NewTensor(Float64, Shape{n, n})
	for i := range n {
		t.Float64s()[i*n+i] = 1
	}
	return Convert(t, dt)
}

// maxEinsumSteps bounds the multiply-adds one Einsum evaluation may take
// (about as many as a 1600×1600×1600 MatMul), so that a small file cannot
// keep import's constant folding or the reference busy for hours.
const maxEinsumSteps = 1 << 32

// Eval contracts the operands the way lowerEinsum does, so that its work
// is bounded by the intermediate results rather than by the product of
// every label's size: each operand first takes its diagonals and sums the
// labels nothing else reads, then operands are contracted two at a time,
// the pair with the smallest result first, and the last term is arranged
// in the output's order. Floats are computed in float64; integers in int64,
// wrapping like the integer types themselves.
func (op *Einsum) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	if _, err := op.Infer(typesOf(in)); err != nil {
		return err
	}
	if out[0].dtype.IsFloat() {
		vals := func(t *Tensor) []float64 { return Convert(t, Float64).Float64s() }
		res, err := einsumEval(op, in, vals)
		if err == nil {
			storeNumbers(out[0], res)
		}
		return err
	}
	vals := func(t *Tensor) []int64 {
		v := make([]int64, t.Len())
		for i := range v {
			v[i] = t.Int64At(i)
		}
		return v
	}
	res, err := einsumEval(op, in, vals)
	for i, v := range res {
		storeInt(out[0], i, v, false, RoundUp)
	}
	return err
}

// einsumTerm is an operand or intermediate result of an einsum: vals laid
// out row-major over dims, one label per axis (a label may repeat, and an
// axis of size 1 broadcasts against its label's size).
type einsumTerm[T float64 | int64] struct {
	vals   []T
	labels string
	dims   []int
}

// einsumLabelDim is the size of label r over the terms: that of its axes
// there, or 1 where every axis labelled r broadcasts (or none has it).
func einsumLabelDim[T float64 | int64](ts []einsumTerm[T], r byte) int {
	for _, t := range ts {
		for d := range len(t.labels) {
			if t.labels[d] == r && t.dims[d] != 1 {
				return t.dims[d]
			}
		}
	}
	return 1
}

func einsumEval[T float64 | int64](op *Einsum, in []*Tensor, vals func(*Tensor) []T) ([]T, error) {
	terms := make([]einsumTerm[T], len(in))
	for i, t := range in {
		terms[i] = einsumTerm[T]{vals(t), op.Inputs[i], t.shape}
	}
	steps := 0
	contract := func(ts []einsumTerm[T], keep string, keepDims []int) (einsumTerm[T], error) {
		var sum string
		var sumDims []int
		for _, t := range ts {
			for _, r := range []byte(t.labels) {
				if strings.IndexByte(keep, r) < 0 && strings.IndexByte(sum, r) < 0 {
					sum += string(r)
					sumDims = append(sumDims, einsumLabelDim(ts, r))
				}
			}
		}
		if err := checkShape(Shape(keepDims), 8, maxTensorBytes); err != nil {
			return einsumTerm[T]{}, fmt.Errorf("einsum %q: an intermediate result: %w", op.Equation, err)
		}
		n, ok := mulBounded(append(slices.Clone(keepDims), sumDims...), maxEinsumSteps-steps)
		if !ok {
			return einsumTerm[T]{}, fmt.Errorf("einsum %q needs more than %d multiply-adds, the limit for one evaluation", op.Equation, maxEinsumSteps)
		}
		steps += n
		return einsumTerm[T]{einsumContract(ts, keep+sum, append(slices.Clone(keepDims), sumDims...), len(keep)), keep, keepDims}, nil
	}
	// needed reports whether label r is read outside terms[i] and terms[j]
	// (j < 0: outside terms[i] only): by the output or another term.
	needed := func(r byte, i, j int) bool {
		if strings.IndexByte(op.Output, r) >= 0 {
			return true
		}
		for k, t := range terms {
			if k != i && k != j && strings.IndexByte(t.labels, r) >= 0 {
				return true
			}
		}
		return false
	}
	// kept lists the labels of ts read outside terms[i] and terms[j], once
	// each, with their sizes.
	kept := func(ts []einsumTerm[T], i, j int) (string, []int) {
		var keep string
		var dims []int
		for _, t := range ts {
			for _, r := range []byte(t.labels) {
				if strings.IndexByte(keep, r) < 0 && needed(r, i, j) {
					keep += string(r)
					dims = append(dims, einsumLabelDim(ts, r))
				}
			}
		}
		return keep, dims
	}
	for i := range terms {
		keep, dims := kept(terms[i:i+1], i, -1)
		if keep == terms[i].labels {
			continue // no diagonal to take, nothing to sum
		}
		t, err := contract(terms[i:i+1], keep, dims)
		if err != nil {
			return nil, err
		}
		terms[i] = t
	}
	for len(terms) > 1 {
		x, y, best := 0, 1, -1.0
		for i := range terms {
			for j := i + 1; j < len(terms); j++ {
				_, dims := kept([]einsumTerm[T]{terms[i], terms[j]}, i, j)
				n := 1.0
				for _, d := range dims {
					n *= float64(d)
				}
				if best < 0 || n < best {
					x, y, best = i, j, n
				}
			}
		}
		pair := []einsumTerm[T]{terms[x], terms[y]}
		keep, dims := kept(pair, x, y)
		t, err := contract(pair, keep, dims)
		if err != nil {
			return nil, err
		}
		terms[x] = t
		terms = slices.Delete(terms, y, y+1)
	}
	if len(terms) == 0 {
		return nil, fmt.Errorf("einsum %q has no operands", op.Equation)
	}
	size, err := op.sizes(typesOf(in))
	if err != nil {
		return nil, err
	}
	outDims := make([]int, len(op.Output))
	for i, r := range []byte(op.Output) {
		outDims[i] = size[rune(r)]
	}
	last := terms[0]
	if last.labels == op.Output && slices.Equal(last.dims, outDims) {
		return last.vals, nil
	}
	t, err := contract(terms, op.Output, outDims)
	return t.vals, err
}

// mulBounded returns the product of dims when it is at most limit.
func mulBounded(dims []int, limit int) (int, bool) {
	n := 1
	for _, d := range dims {
		if d == 0 {
			return 0, true
		}
	}
	for _, d := range dims {
		if d > limit/n {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// einsumContract is, over the labels' dims (the first nKeep labels the
// result's axes, the rest summed):
//
//	for every index o of the result and s of the summed labels:
//		res[o] += Π_k ts[k].vals[the element of ts[k] at (o, s)]
//
// where a term's axis of size 1 stays at 0 and a label repeated within a
// term indexes each of its axes alike (its diagonal).
func einsumContract[T float64 | int64](ts []einsumTerm[T], labels string, dims []int, nKeep int) []T {
	res := make([]T, Shape(dims[:nKeep]).Size())
	inner := Shape(dims[nKeep:]).Size()
	if len(res) == 0 || inner == 0 {
		return res
	}
	// strides[k][l]: how far term k moves when label l advances.
	strides := make([][]int, len(ts))
	for k, t := range ts {
		strides[k] = make([]int, len(labels))
		st := Shape(t.dims).Strides()
		for d, r := range []byte(t.labels) {
			if t.dims[d] != 1 {
				strides[k][strings.IndexByte(labels, r)] += st[d]
			}
		}
	}
	idx := make([]int, len(labels))
	offs := make([]int, len(ts))
	for o := range res {
		var acc T
		for range inner {
			p := T(1)
			for k, t := range ts {
				p *= t.vals[offs[k]]
			}
			acc += p
			for l := len(idx) - 1; l >= 0; l-- {
				idx[l]++
				for k := range offs {
					offs[k] += strides[k][l]
				}
				if idx[l] < dims[l] {
					break
				}
				for k := range offs {
					offs[k] -= strides[k][l] * dims[l]
				}
				idx[l] = 0
			}
		}
		res[o] = acc
	}
	return res
}
