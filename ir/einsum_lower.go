package ir

import (
	"slices"
	"strings"
)

// lowerEinsum writes an einsum as the ops a backend runs fast: labels only
// one operand has and the output lacks are summed away first, then the
// operands are contracted two at a time, the pair with the smallest
// product first, each as one batched MatMul — the labels both share and a
// later term needs are the batch, those they share and nothing later
// needs the inner dimension, the rest the rows and columns — between
// transposes and reshapes (an element-wise Mul where nothing is summed);
// a last transpose puts the labels in the output's order. Every part has a
// gradient. It returns nil (and the Einsum op is kept) for what this does
// not cover: a label repeated within a term (a diagonal), a label whose
// sizes differ between operands (broadcast from 1), and dtypes other
// than float32 and float64.
func lowerEinsum(emit func(Op, ...*Value) (*Value, error), op *Einsum, in []*Value) (*Value, error) {
	if len(in) == 0 || hasRepeatedLabel(op.Output) {
		return nil, nil
	}
	dt := in[0].DType
	if dt != Float32 && dt != Float64 {
		return nil, nil
	}
	l := &einsumLowering{emit: emit, size: map[byte]int{}}
	size := l.size
	type term struct {
		v      *Value
		labels string
	}
	terms := make([]term, len(in))
	for i, v := range in {
		labels := op.Inputs[i]
		if v == nil || v.DType != dt || len(v.Shape) != len(labels) || hasRepeatedLabel(labels) {
			return nil, nil
		}
		for d := range len(labels) {
			if s, ok := size[labels[d]]; ok && s != v.Shape[d] {
				return nil, nil
			}
			size[labels[d]] = v.Shape[d]
		}
		terms[i] = term{v, labels}
	}
	for _, r := range []byte(op.Output) {
		if _, ok := size[r]; !ok {
			return nil, nil
		}
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
	// Labels one term alone has and nothing after reads are summed away.
	for i := range terms {
		var axes []int
		kept := ""
		for d, r := range []byte(terms[i].labels) {
			if needed(r, i, -1) {
				kept += string(r)
			} else {
				axes = append(axes, d)
			}
		}
		if len(axes) > 0 {
			v, err := emit(&Reduce{Fn: ReduceSum, Axes: axes}, terms[i].v)
			if err != nil {
				return nil, err
			}
			terms[i] = term{v, kept}
		}
	}
	for len(terms) > 1 {
		// The pair whose product is smallest goes first (ties: the
		// leftmost), so that operands sharing no label are not multiplied
		// out into an outer product a later term would have summed away.
		x, y, best := 0, 1, -1.0
		for i := range terms {
			for j := i + 1; j < len(terms); j++ {
				n, kept := 1.0, ""
				for _, r := range []byte(terms[i].labels + terms[j].labels) {
					if strings.IndexByte(kept, r) < 0 && needed(r, i, j) {
						kept += string(r)
						n *= float64(size[r])
					}
				}
				if best < 0 || n < best {
					x, y, best = i, j, n
				}
			}
		}
		a, b := terms[x], terms[y]
		var batch, inner, rows, cols string
		for _, r := range []byte(a.labels) {
			switch {
			case strings.IndexByte(b.labels, r) < 0:
				rows += string(r)
			case needed(r, x, y):
				batch += string(r)
			default:
				inner += string(r)
			}
		}
		for _, r := range []byte(b.labels) {
			if strings.IndexByte(a.labels, r) < 0 {
				cols += string(r)
			}
		}
		var p *Value
		var err error
		if inner == "" {
			p, err = l.outerProduct(a.v, a.labels, b.v, b.labels, batch, rows, cols)
		} else {
			p, err = l.innerProduct(a.v, a.labels, b.v, b.labels, batch, inner, rows, cols)
		}
		if err != nil {
			return nil, err
		}
		terms[x] = term{p, batch + rows + cols}
		terms = slices.Delete(terms, y, y+1)
	}
	return l.arrange(terms[0].v, terms[0].labels, op.Output)
}

func valueTypes(vs []*Value) []Type {
	types := make([]Type, len(vs))
	for i, v := range vs {
		types[i] = v.Type
	}
	return types
}

// einsumLowering emits the ops of a lowered einsum; size is every label's
// dimension.
type einsumLowering struct {
	emit func(Op, ...*Value) (*Value, error)
	size map[byte]int
}

// dims is the shape of labels.
func (l *einsumLowering) dims(labels string) Shape {
	s := Shape{}
	for _, r := range []byte(labels) {
		s = append(s, l.size[r])
	}
	return s
}

// arrange transposes v, labelled from, to the labels' order to.
func (l *einsumLowering) arrange(v *Value, from, to string) (*Value, error) {
	perm := make([]int, len(to))
	for i := range len(to) {
		perm[i] = strings.IndexByte(from, to[i])
	}
	if slices.Equal(perm, iotaInts(len(perm))) {
		return v, nil
	}
	return l.emit(&Transpose{Perm: perm}, v)
}

func (l *einsumLowering) reshape(v *Value, s Shape) (*Value, error) {
	if v.Shape.Equal(s) {
		return v, nil
	}
	return l.emit(&Reshape{Shape: s}, v)
}

// innerProduct contracts a and b over the inner labels as one batched
// MatMul: [batch, rows, inner]·[batch, inner, cols].
func (l *einsumLowering) innerProduct(a *Value, al string, b *Value, bl string, batch, inner, rows, cols string) (*Value, error) {
	B, M, K, N := l.dims(batch).Size(), l.dims(rows).Size(), l.dims(inner).Size(), l.dims(cols).Size()
	av, err := l.arrange(a, al, batch+rows+inner)
	if err == nil {
		av, err = l.reshape(av, Shape{B, M, K})
	}
	if err != nil {
		return nil, err
	}
	bv, err := l.arrange(b, bl, batch+inner+cols)
	if err == nil {
		bv, err = l.reshape(bv, Shape{B, K, N})
	}
	if err != nil {
		return nil, err
	}
	p, err := l.emit(&MatMul{}, av, bv)
	if err != nil {
		return nil, err
	}
	return l.reshape(p, l.dims(batch+rows+cols))
}

// outerProduct is the product of a and b with nothing to sum: an
// element-wise Mul broadcasting a's rows against b's columns.
func (l *einsumLowering) outerProduct(a *Value, al string, b *Value, bl string, batch, rows, cols string) (*Value, error) {
	ones := func(n int) Shape {
		s := make(Shape, n)
		for i := range s {
			s[i] = 1
		}
		return s
	}
	av, err := l.arrange(a, al, batch+rows)
	if err == nil {
		av, err = l.reshape(av, append(l.dims(batch+rows), ones(len(cols))...))
	}
	if err != nil {
		return nil, err
	}
	bv, err := l.arrange(b, bl, batch+cols)
	if err == nil {
		bv, err = l.reshape(bv, append(append(l.dims(batch), ones(len(rows))...), l.dims(cols)...))
	}
	if err != nil {
		return nil, err
	}
	return l.emit(&Binary{Fn: Mul}, av, bv)
}
