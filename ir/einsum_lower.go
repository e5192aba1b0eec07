package ir

import (
	"slices"
	"strings"
)

// lowerEinsum writes an einsum as the ops a backend runs fast: labels only
// one operand has and the output lacks are summed away first, then the
// operands are contracted two at a time, left to right, each as one
// batched MatMul — the labels both share and a later term needs are the
// batch, those they share and nothing later needs the inner dimension,
// the rest the rows and columns — between transposes and reshapes; a
// last transpose puts the labels in the output's order. Every part has a
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
	size := map[byte]int{}
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
	dims := func(labels string) Shape {
		s := Shape{}
		for _, r := range []byte(labels) {
			s = append(s, size[r])
		}
		return s
	}
	arrange := func(v *Value, from, to string) (*Value, error) {
		perm := make([]int, len(to))
		for i := range len(to) {
			perm[i] = strings.IndexByte(from, to[i])
		}
		if slices.Equal(perm, iotaInts(len(perm))) {
			return v, nil
		}
		return emit(&Transpose{Perm: perm}, v)
	}
	reshape := func(v *Value, s Shape) (*Value, error) {
		if v.Shape.Equal(s) {
			return v, nil
		}
		return emit(&Reshape{Shape: s}, v)
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
			p, err = outerProduct(emit, arrange, reshape, a.v, a.labels, b.v, b.labels, batch, rows, cols, dims)
		} else {
			p, err = innerProduct(emit, arrange, reshape, a.v, a.labels, b.v, b.labels, batch, inner, rows, cols, dims)
		}
		if err != nil {
			return nil, err
		}
		terms[x] = term{p, batch + rows + cols}
		terms = slices.Delete(terms, y, y+1)
	}
	return arrange(terms[0].v, terms[0].labels, op.Output)
}

func valueTypes(vs []*Value) []Type {
	types := make([]Type, len(vs))
	for i, v := range vs {
		types[i] = v.Type
	}
	return types
}

// innerProduct contracts a and b over the inner labels as one batched
// MatMul: [batch, rows, inner]·[batch, inner, cols].
func innerProduct(emit func(Op, ...*Value) (*Value, error), arrange func(*Value, string, string) (*Value, error), reshape func(*Value, Shape) (*Value, error),
	a *Value, al string, b *Value, bl string, batch, inner, rows, cols string, dims func(string) Shape) (*Value, error) {
	B, M, K, N := dims(batch).Size(), dims(rows).Size(), dims(inner).Size(), dims(cols).Size()
	av, err := arrange(a, al, batch+rows+inner)
	if err == nil {
		av, err = reshape(av, Shape{B, M, K})
	}
	if err != nil {
		return nil, err
	}
	bv, err := arrange(b, bl, batch+inner+cols)
	if err == nil {
		bv, err = reshape(bv, Shape{B, K, N})
	}
	if err != nil {
		return nil, err
	}
	p, err := emit(&MatMul{}, av, bv)
	if err != nil {
		return nil, err
	}
	return reshape(p, dims(batch+rows+cols))
}

// outerProduct is the product of a and b with nothing to sum: an
// element-wise Mul broadcasting a's rows against b's columns.
func outerProduct(emit func(Op, ...*Value) (*Value, error), arrange func(*Value, string, string) (*Value, error), reshape func(*Value, Shape) (*Value, error),
	a *Value, al string, b *Value, bl string, batch, rows, cols string, dims func(string) Shape) (*Value, error) {
	ones := func(n int) Shape {
		s := make(Shape, n)
		for i := range s {
			s[i] = 1
		}
		return s
	}
	av, err := arrange(a, al, batch+rows)
	if err == nil {
		av, err = reshape(av, append(dims(batch+rows), ones(len(cols))...))
	}
	if err != nil {
		return nil, err
	}
	bv, err := arrange(b, bl, batch+cols)
	if err == nil {
		bv, err = reshape(bv, append(append(dims(batch), ones(len(rows))...), dims(cols)...))
	}
	if err != nil {
		return nil, err
	}
	return emit(&Binary{Fn: Mul}, av, bv)
}
