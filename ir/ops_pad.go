package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// Padding: ONNX Pad (every mode and opset) and CenterCropPad import as the
// Pad op; its gradient is a Pad with the pads negated (constant mode) or
// PadGrad (the other modes).

func init() {
	registerOp("", "Pad", importPad)
	registerOp("", "CenterCropPad", importCenterCropPad)
	// pads and axes decide the output shape; constant_value is an
	// ordinary operand.
	registerStaticOperands("", "Pad", 1, 3)
	registerStaticOperands("", "CenterCropPad", 1)
}

// PadMode says what fills the positions a Pad adds.
type PadMode uint8

const (
	// PadConstant fills with a constant (zero, or Pad's optional value
	// operand).
	PadConstant PadMode = iota
	// PadReflect mirrors the input without repeating the edge element
	// (numpy's "reflect": 1 2 3 padded by 2 on both sides is 3 2 1 2 3 2 1).
	PadReflect
	// PadEdge repeats the edge element.
	PadEdge
	// PadWrap continues the input periodically.
	PadWrap
)

var padModeNames = [...]string{PadConstant: "constant", PadReflect: "reflect", PadEdge: "edge", PadWrap: "wrap"}

func (m PadMode) String() string {
	if int(m) < len(padModeNames) {
		return padModeNames[m]
	}
	return fmt.Sprintf("PadMode(%d)", uint8(m))
}

// ---------------------------------------------------------------- Pad

// Pad pads (or, with negative pads, crops) every axis. Pads holds the
// begin pads of all axes, then the end pads, as ONNX lays them out. On
// each axis the negative pads crop first; the positive ones then add
// positions to what is left, filled according to Mode (reflect, edge and
// wrap see only the cropped input). The optional second input is the
// constant fill value, a scalar of the input's dtype (zero when absent).
//
// Wider reflect and wrap pads than the axis repeat the pattern, as numpy's
// pad does: on an axis of length m, output position p (counted from the
// first input element kept) reads
//
//	constant: p in [0, m) ? x[p] : value
//	edge:     x[clamp(p, 0, m-1)]
//	wrap:     x[p mod m]
//	reflect:  x[q] with q = p mod 2(m-1), mirrored to 2(m-1)-q when q ≥ m
type Pad struct {
	Mode PadMode
	Pads []int
}

func (op *Pad) Name() string { return "Pad(" + op.Mode.String() + ")" }

// padExtent checks one axis of length n padded by begin and end pads and
// returns the length kept by cropping and the padded length.
func padExtent(mode PadMode, n, begin, end int) (kept, padded int, err error) {
	if begin < -maxTensorBytes || begin > maxTensorBytes || end < -maxTensorBytes || end > maxTensorBytes {
		return 0, 0, fmt.Errorf("pads %d, %d are beyond any tensor's size", begin, end)
	}
	kept = n + min(begin, 0) + min(end, 0)
	if kept < 0 {
		return 0, 0, fmt.Errorf("pads %d, %d crop more than the axis length %d", begin, end, n)
	}
	padded = kept + max(begin, 0) + max(end, 0)
	if mode != PadConstant && kept == 0 && padded > 0 {
		return 0, 0, fmt.Errorf("%s padding of an empty axis", mode)
	}
	return kept, padded, nil
}

func (op *Pad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 2); err != nil {
		return nil, err
	}
	x := in[0]
	if int(op.Mode) >= len(padModeNames) {
		return nil, fmt.Errorf("unknown pad mode %d", op.Mode)
	}
	if v, ok := optional(in, 1); ok {
		if op.Mode != PadConstant {
			return nil, fmt.Errorf("a fill value for %s padding", op.Mode)
		}
		if v.DType != x.DType || len(v.Shape) != 0 {
			return nil, fmt.Errorf("fill value is %v, want a %s scalar", v, x.DType)
		}
	}
	r := len(x.Shape)
	if len(op.Pads) != 2*r {
		return nil, fmt.Errorf("%d pads for rank %d, want %d", len(op.Pads), r, 2*r)
	}
	shape := make(Shape, r)
	for d, n := range x.Shape {
		_, padded, err := padExtent(op.Mode, n, op.Pads[d], op.Pads[r+d])
		if err != nil {
			return nil, fmt.Errorf("axis %d: %w", d, err)
		}
		shape[d] = padded
	}
	return []Type{{x.DType, shape}}, nil
}

// padSources returns, for every output position of one axis, the input
// position it reads (-1: the constant fill).
func padSources(mode PadMode, n, begin, end int) []int {
	kept, padded, _ := padExtent(mode, n, begin, end)
	first := -min(begin, 0) // the first input position kept
	lead := max(begin, 0)   // output positions before it
	src := make([]int, padded)
	for o := range src {
		p := o - lead
		switch {
		case p >= 0 && p < kept:
		case mode == PadConstant:
			src[o] = -1
			continue
		case mode == PadEdge:
			p = max(0, min(p, kept-1))
		case mode == PadWrap:
			p = ((p % kept) + kept) % kept
		case kept == 1: // reflect
			p = 0
		default: // reflect
			period := 2 * (kept - 1)
			p = ((p % period) + period) % period
			if p >= kept {
				p = period - p
			}
		}
		src[o] = first + p
	}
	return src
}

// padTables returns padSources for every axis of shape.
func (op *Pad) padTables(shape Shape) [][]int {
	r := len(shape)
	tables := make([][]int, r)
	for d, n := range shape {
		tables[d] = padSources(op.Mode, n, op.Pads[d], op.Pads[r+d])
	}
	return tables
}

// forPadRows walks the output rows (all axes but the last) of a pad of
// an input of shape x: for every row it calls fn with the row's output
// offset and the input offset of the row it reads (-1: a row of the
// constant fill).
func forPadRows(tables [][]int, x Shape, rows int, fn func(out, in int)) {
	last := len(x) - 1
	xs := x.Strides()
	rowLen := len(tables[last])
	pos := make([]int, last)
	for row := range rows {
		base := 0
		for d := range last {
			s := tables[d][pos[d]]
			if s < 0 {
				base = -1
				break
			}
			base += s * xs[d]
		}
		fn(row*rowLen, base)
		for d := last - 1; d >= 0; d-- {
			pos[d]++
			if pos[d] < len(tables[d]) {
				break
			}
			pos[d] = 0
		}
	}
}

func (op *Pad) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	if y.Len() == 0 {
		return nil
	}
	if len(x.shape) == 0 {
		copy(y.data, x.data)
		return nil
	}
	v := optIn(in, 1)
	tables := op.padTables(x.shape)
	last := len(x.shape) - 1
	lead := max(op.Pads[last], 0)
	kept := len(tables[last]) - lead - max(op.Pads[2*last+1], 0)
	byWidth(x.dtype,
		func() { padInto(view[uint8](x), view[uint8](y), fillOf[uint8](v), tables, x.shape, lead, kept) },
		func() { padInto(view[uint16](x), view[uint16](y), fillOf[uint16](v), tables, x.shape, lead, kept) },
		func() { padInto(view[uint32](x), view[uint32](y), fillOf[uint32](v), tables, x.shape, lead, kept) },
		func() { padInto(view[uint64](x), view[uint64](y), fillOf[uint64](v), tables, x.shape, lead, kept) })
	return nil
}

// fillOf is the fill value's bits (zero without one).
func fillOf[E word](v *Tensor) E {
	if v == nil {
		return 0
	}
	return view[E](v)[0]
}

// padInto fills y, the pad of x (of shape) that tables describe. The
// kept part of every row, kept elements from position lead on, reads one
// contiguous run of an input row.
func padInto[E word](x, y []E, fill E, tables [][]int, shape Shape, lead, kept int) {
	inner := tables[len(tables)-1]
	forPadRows(tables, shape, len(y)/len(inner), func(o, base int) {
		row := y[o : o+len(inner)]
		if base < 0 {
			for j := range row {
				row[j] = fill
			}
			return
		}
		for j, s := range inner {
			if j == lead && kept > 0 {
				copy(row[j:j+kept], x[base+s:base+s+kept])
			}
			if j >= lead && j < lead+kept {
				continue
			}
			if s < 0 {
				row[j] = fill
			} else {
				row[j] = x[base+s]
			}
		}
	})
}

// gradRule: a constant pad's gradient is dy with the pads cropped off and
// the cropped positions zero-filled, i.e. Pad with the pads negated; the
// fill value's gradient is the sum of dy over the padded positions. The
// other modes read some inputs several times, and PadGrad adds those
// reads up.
func (op *Pad) gradRule(d *differ, c *gradCtx) error {
	dy := c.dy[0]
	x := c.in(0)
	neg := make([]int, len(op.Pads))
	for i, p := range op.Pads {
		neg[i] = -p
	}
	var cropped *Value
	if op.Mode == PadConstant && (c.needs(0) || c.needs(1)) {
		cropped = d.emit1(&Pad{Mode: PadConstant, Pads: neg}, dy)
	}
	if c.needs(0) {
		if op.Mode == PadConstant {
			c.add(0, cropped)
		} else {
			c.add(0, d.emit1(&PadGrad{Mode: op.Mode, Pads: op.Pads, Shape: x.Shape.Clone()}, dy))
		}
	}
	if c.needs(1) && len(dy.Shape) > 0 {
		all := func(v *Value) *Value {
			axes := iotaInts(len(v.Shape))
			return d.emit1(&Reduce{Fn: ReduceSum, Axes: axes}, v)
		}
		c.add(1, d.binary(Sub, all(dy), all(cropped)))
	}
	return nil
}

// ---------------------------------------------------------------- PadGrad

// PadGrad is the gradient of a reflect, edge or wrap Pad with respect to
// its input: out has Shape, the input's shape, and every element of dy
// adds into the input position the Pad read it from:
//
//	out = 0
//	out[src(o)] += dy[o]   for every output position o of the Pad
type PadGrad struct {
	Mode  PadMode
	Pads  []int
	Shape Shape
}

func (op *PadGrad) Name() string { return "PadGrad(" + op.Mode.String() + ")" }

func (op *PadGrad) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	dy := in[0]
	if !isFloat(dy.DType) {
		return nil, fmt.Errorf("dy is %s, want a float type", dy.DType)
	}
	fwd, err := (&Pad{Mode: op.Mode, Pads: op.Pads}).Infer([]Type{{dy.DType, op.Shape}})
	if err != nil {
		return nil, err
	}
	if !fwd[0].Shape.Equal(dy.Shape) {
		return nil, fmt.Errorf("dy is %v, the pad of %v gives %v", dy.Shape, op.Shape, fwd[0].Shape)
	}
	return []Type{{dy.DType, op.Shape.Clone()}}, nil
}

func (op *PadGrad) Eval(in, out []*Tensor) error {
	if done, err := widenNarrow(in, out, op.Eval); done {
		return err
	}
	dy, y := in[0], out[0]
	if dy.Len() == 0 {
		clear(y.data)
		return nil
	}
	res := make([]float64, y.Len())
	g := Convert(dy, Float64).Float64s()
	if len(op.Shape) == 0 {
		copy(res, g)
	} else {
		p := &Pad{Mode: op.Mode, Pads: op.Pads}
		tables := p.padTables(op.Shape)
		inner := tables[len(tables)-1]
		forPadRows(tables, op.Shape, dy.Len()/len(inner), func(o, base int) {
			if base < 0 {
				return
			}
			for j, s := range inner {
				if s >= 0 {
					res[base+s] += g[o+j]
				}
			}
		})
	}
	storeFloats(y, res)
	return nil
}

// ---------------------------------------------------------------- import

func parsePadMode(name string, opset int) (PadMode, error) {
	for m, s := range padModeNames {
		if s == name {
			if PadMode(m) == PadWrap && opset < 19 {
				return 0, fmt.Errorf("Pad mode %q needs opset 19, the model imports opset %d", name, opset)
			}
			return PadMode(m), nil
		}
	}
	return 0, fmt.Errorf("Pad mode %q, want constant, reflect, edge or wrap", name)
}

// padsForAxes spreads ONNX pads given for axes (nil: every axis) over all
// rank axes, in Pad's begins-then-ends layout.
func padsForAxes(pads, axes []int, rank int) ([]int, error) {
	if axes == nil {
		axes = iotaInts(rank)
	}
	if len(pads) != 2*len(axes) {
		return nil, fmt.Errorf("%d pads for %d axes, want %d", len(pads), len(axes), 2*len(axes))
	}
	full := make([]int, 2*rank)
	seen := make([]bool, rank)
	for i, a := range axes {
		a, err := normAxis(a, rank)
		if err != nil {
			return nil, err
		}
		if seen[a] {
			return nil, fmt.Errorf("axis %d repeated", a)
		}
		seen[a] = true
		full[a], full[rank+a] = pads[i], pads[len(axes)+i]
	}
	return full, nil
}

func allZero(v []int) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}

func importPad(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 4); err != nil {
		return nil, err
	}
	x := in[0]
	modeName, err := n.AttrString("mode", "constant")
	if err != nil {
		return nil, err
	}
	mode, err := parsePadMode(modeName, im.opset)
	if err != nil {
		return nil, err
	}
	var pads, axes []int
	var value *Value
	if im.opset < 11 {
		if len(in) > 1 {
			return nil, fmt.Errorf("Pad before opset 11 takes one input, got %d", len(in))
		}
		name := "pads"
		if im.opset < 2 {
			name = "paddings"
		}
		var ok bool
		if pads, ok, err = attrInts(n, name); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("attribute %s is required", name)
		}
		v, err := n.AttrFloat("value", 0)
		if err != nil {
			return nil, err
		}
		if v != 0 {
			t := NewTensor(x.DType, nil)
			storeFloat(t, 0, float64(v), true, RoundUp)
			value = im.constant(t)
		}
	} else {
		var ok bool
		if pads, ok, err = im.constInts(in, 1, "pads"); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("input 1 (pads) is required")
		}
		if len(in) > 2 && in[2] != nil {
			if value, err = padFillValue(im, x, in[2]); err != nil {
				return nil, err
			}
		}
		if len(in) > 3 && in[3] != nil {
			if im.opset < 18 {
				return nil, fmt.Errorf("Pad's axes input needs opset 18, the model imports opset %d", im.opset)
			}
			if axes, _, err = im.constInts(in, 3, "axes"); err != nil {
				return nil, err
			}
		}
	}
	full, err := padsForAxes(pads, axes, len(x.Shape))
	if err != nil {
		return nil, err
	}
	if allZero(full) {
		return []*Value{x}, nil
	}
	args := []*Value{x}
	if value != nil && mode == PadConstant {
		args = append(args, value)
	}
	return one(im.emit1(&Pad{Mode: mode, Pads: full}, args...))
}

// padFillValue checks Pad's constant_value operand and returns it as a
// scalar, or nil when it is a constant zero (the default fill).
func padFillValue(im *importer, x, v *Value) (*Value, error) {
	if v.DType != x.DType || v.Shape.Size() != 1 || len(v.Shape) > 1 {
		return nil, fmt.Errorf("constant_value is %v, want one %s", v.Type, x.DType)
	}
	if v.Kind == ConstValue && allZeroBytes(v.Const.data) {
		return nil, nil
	}
	return im.reshape(v, Shape{})
}

func allZeroBytes(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// importCenterCropPad: CenterCropPad crops or zero-pads the given axes to
// the target shape, centred (the extra element of an odd difference goes
// to the end), which is one constant Pad whose negative pads crop.
func importCenterCropPad(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	x := in[0]
	r := len(x.Shape)
	target, _, err := im.constInts(in, 1, "shape")
	if err != nil {
		return nil, err
	}
	axes, given, err := attrInts(n, "axes")
	if err != nil {
		return nil, err
	}
	if !given {
		axes = iotaInts(r)
	}
	if len(target) != len(axes) {
		return nil, fmt.Errorf("shape has %d elements for %d axes", len(target), len(axes))
	}
	pads := make([]int, 2*len(axes))
	for i, a := range axes {
		a, err := normAxis(a, r)
		if err != nil {
			return nil, err
		}
		t, have := target[i], x.Shape[a]
		if t < 0 || t > maxTensorBytes {
			return nil, fmt.Errorf("target length %d for axis %d", t, a)
		}
		diff := t - have // > 0 pads, < 0 crops
		begin := diff / 2
		if diff < 0 {
			begin = -((-diff) / 2)
		}
		pads[i], pads[len(axes)+i] = begin, diff-begin
	}
	full, err := padsForAxes(pads, axes, r)
	if err != nil {
		return nil, err
	}
	if allZero(full) {
		return []*Value{x}, nil
	}
	return one(im.emit1(&Pad{Mode: PadConstant, Pads: full}, x))
}
