package ir

import "fmt"

// BroadcastShapes returns the shape the operands broadcast to under numpy
// rules: shapes are aligned at the right and every dimension must be equal
// or 1.
func BroadcastShapes(shapes ...Shape) (Shape, error) {
	rank := 0
	for _, s := range shapes {
		rank = max(rank, len(s))
	}
	out := make(Shape, rank)
	for i := range out {
		out[i] = 1
	}
	for _, s := range shapes {
		off := rank - len(s)
		for i, d := range s {
			o := &out[off+i]
			switch {
			case d == *o || d == 1:
			case *o == 1:
				*o = d
			default:
				return nil, fmt.Errorf("shapes %v do not broadcast", shapes)
			}
		}
	}
	return out, nil
}

// BroadcastStrides returns the element strides with which an operand of
// shape in is read while iterating over the broadcast shape out (rank
// len(out)): the operand's row-major strides, right-aligned, with 0 for
// every broadcast (size-1 or missing) dimension.
func BroadcastStrides(in, out Shape) []int {
	st := make([]int, len(out))
	off := len(out) - len(in)
	n := 1
	for i := len(in) - 1; i >= 0; i-- {
		if in[i] != 1 {
			st[off+i] = n
		}
		n *= in[i]
	}
	return st
}

// runIndexer walks an output shape in row-major order in runs along the
// innermost dimension, tracking where every operand's run starts. Size-1
// dimensions and dimensions that are contiguous for every operand are
// merged first, so the runs are as long as possible.
type runIndexer struct {
	outer   Shape   // dimensions above the innermost
	strides [][]int // per operand, for the outer dimensions
	inner   int     // length of a run
	step    []int   // per operand, the stride within a run
}

func newRunIndexer(out Shape, ins ...Shape) *runIndexer {
	all := make([][]int, len(ins))
	for k, s := range ins {
		all[k] = BroadcastStrides(s, out)
	}
	// Merge adjacent dimensions i-1, i when every operand steps through
	// them as one: stride[i-1] == stride[i]*out[i].
	var dims Shape
	merged := make([][]int, len(ins))
	for i, d := range out {
		if d == 1 {
			continue
		}
		if len(dims) > 0 {
			last := len(dims) - 1
			ok := true
			for k := range ins {
				if merged[k][last] != all[k][i]*d {
					ok = false
					break
				}
			}
			if ok {
				dims[last] *= d
				for k := range ins {
					merged[k][last] = all[k][i]
				}
				continue
			}
		}
		dims = append(dims, d)
		for k := range ins {
			merged[k] = append(merged[k], all[k][i])
		}
	}
	r := &runIndexer{inner: 1, step: make([]int, len(ins)), strides: make([][]int, len(ins))}
	if len(dims) == 0 {
		return r
	}
	last := len(dims) - 1
	r.inner = dims[last]
	r.outer = dims[:last]
	for k := range ins {
		r.step[k] = merged[k][last]
		r.strides[k] = merged[k][:last]
	}
	return r
}

// forRuns calls fn(o, base) for every run: o is the output offset of the
// run's first element (the run is contiguous in the output), base[k] the
// offset of operand k's first element; operand k advances by step[k].
func (r *runIndexer) forRuns(fn func(o int, base []int)) {
	if r.inner == 0 || r.outer.Size() == 0 {
		return
	}
	idx := make([]int, len(r.outer))
	base := make([]int, len(r.step))
	for o := 0; ; o += r.inner {
		fn(o, base)
		// odometer increment
		d := len(idx) - 1
		for ; d >= 0; d-- {
			idx[d]++
			for k := range base {
				base[k] += r.strides[k][d]
			}
			if idx[d] < r.outer[d] {
				break
			}
			for k := range base {
				base[k] -= r.strides[k][d] * r.outer[d]
			}
			idx[d] = 0
		}
		if d < 0 {
			return
		}
	}
}
