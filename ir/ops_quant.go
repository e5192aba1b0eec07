package ir

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// Quantization operators. DequantizeLinear, MatMulInteger and ConvInteger
// import as compositions of Cast, Sub, Mul, MatMul and Conv (so a scale
// that is a parameter gets a gradient); QuantizeLinear and
// DynamicQuantizeLinear are IR ops of their own (round half to even and
// saturation have no exact composition); QLinearMatMul and QLinearConv
// compute their integer product in float64 (exact) and requantize with
// QuantizeLinear.

func init() {
	registerOp("", "QuantizeLinear", importQuantizeLinear)
	registerOp("", "DequantizeLinear", importDequantizeLinear)
	registerOp("", "DynamicQuantizeLinear", importDynamicQuantizeLinear)
	registerOp("", "QLinearMatMul", importQLinearMatMul)
	registerOp("", "QLinearConv", importQLinearConv)
	registerOp("", "MatMulInteger", importMatMulInteger)
	registerOp("", "ConvInteger", importConvInteger)
	// onnxruntime's own spellings, from before ONNX had 16- and 4-bit
	// types, mean the same (quantization tools still write them).
	registerOp("com.microsoft", "QuantizeLinear", importQuantizeLinear)
	registerOp("com.microsoft", "DequantizeLinear", importDequantizeLinear)
}

// ---------------------------------------------------------------- granularity

// quantLayout is how a scale (and its zero point) covers the quantized
// tensor x: one scale for all of x (axis < 0); one scale per index along
// axis (block == 0, the scale a vector of x's length along axis); or one
// scale per block of that many consecutive indices along axis (the scale
// has x's shape except ceil(x[axis]/block) along axis).
type quantLayout struct {
	axis, block int
}

// quantAttrs reads the axis and block_size attributes of QuantizeLinear
// and DequantizeLinear and resolves the layout they give x and scale.
func quantAttrs(n *onnx.Node, x, scale Shape) (axis, block int, layout quantLayout, err error) {
	if axis, err = attrInt(n, "axis", 1); err != nil {
		return
	}
	if block, err = attrInt(n, "block_size", 0); err != nil {
		return
	}
	layout, err = resolveQuantLayout(x, scale, axis, block)
	return
}

// resolveQuantLayout decides the granularity from the scale's shape, as
// QuantizeLinear and DequantizeLinear define it; axis and block are the
// node's attributes.
func resolveQuantLayout(x, scale Shape, axis, block int) (quantLayout, error) {
	if block < 0 {
		return quantLayout{}, fmt.Errorf("attribute block_size is %d, want a positive block size (or 0 for none)", block)
	}
	if scale.Size() == 1 && (len(scale) <= 1 || len(scale) == len(x)) {
		return quantLayout{axis: -1}, nil
	}
	a, err := normAxis(axis, len(x))
	if err != nil {
		return quantLayout{}, fmt.Errorf("attribute axis: %w", err)
	}
	if block == 0 {
		if len(scale) != 1 || scale[0] != x[a] {
			return quantLayout{}, fmt.Errorf("scale %v for input %v: want a scalar, or a vector of %d for axis %d (or block_size for blocked quantization)", scale, x, x[a], a)
		}
		return quantLayout{axis: a}, nil
	}
	want := x.Clone()
	want[a] = (x[a] + block - 1) / block
	if !scale.Equal(want) {
		return quantLayout{}, fmt.Errorf("scale %v for input %v with block_size %d along axis %d: want %v", scale, x, block, a, want)
	}
	return quantLayout{axis: a, block: block}, nil
}

// eachScale calls f(i, s) for every element i (flat index) of a tensor of
// shape x with s the flat index of the scale that covers it.
func (l quantLayout) eachScale(x Shape, f func(i, s int)) {
	if l.axis < 0 {
		for i := range x.Size() {
			f(i, 0)
		}
		return
	}
	outer, d, inner := x[:l.axis].Size(), x[l.axis], x[l.axis+1:].Size()
	blocks := 0
	if l.block > 0 {
		blocks = (d + l.block - 1) / l.block
	}
	i := 0
	for o := range outer {
		for a := range d {
			for k := range inner {
				s := a
				if l.block > 0 {
					s = (o*blocks+a/l.block)*inner + k
				}
				f(i, s)
				i++
			}
		}
	}
}

// checkZeroPoint checks that a zero point matches its scale's shape (two
// one-element shapes match whatever their rank).
func checkZeroPoint(zp, scale Shape) error {
	if zp.Equal(scale) || (zp.Size() == 1 && scale.Size() == 1) {
		return nil
	}
	return fmt.Errorf("zero point %v does not match scale %v", zp, scale)
}

// broadcastQuantParam reshapes a scale or zero point laid out as l so that
// it broadcasts against x: a scalar, a vector standing along l.axis, or,
// blocked, repeated block times along the axis and cut to x's length.
func (im *importer) broadcastQuantParam(p *Value, x Shape, l quantLayout) (*Value, error) {
	if l.axis < 0 {
		return im.reshape(p, Shape{})
	}
	if l.block == 0 {
		shape := ones(len(x))
		shape[l.axis] = x[l.axis]
		return im.reshape(p, Shape(shape))
	}
	if l.block == 1 {
		return p, nil
	}
	blocks := p.Shape[l.axis]
	split := append(p.Shape[:l.axis+1].Clone(), 1)
	split = append(split, p.Shape[l.axis+1:]...)
	v, err := im.reshape(p, split)
	if err != nil {
		return nil, err
	}
	split[l.axis+1] = l.block
	if v, err = im.emit1(&Expand{Shape: split.Clone()}, v); err != nil {
		return nil, err
	}
	full := p.Shape.Clone()
	full[l.axis] = blocks * l.block
	if v, err = im.reshape(v, full); err != nil {
		return nil, err
	}
	if full[l.axis] == x[l.axis] {
		return v, nil
	}
	starts, steps := make([]int, len(x)), ones(len(x))
	return im.emit1(&Slice{Starts: starts, Steps: steps, Sizes: []int(x.Clone())}, v)
}

// isConstZero reports whether v is a constant whose elements are all zero.
func isConstZero(v *Value) bool {
	if v == nil || v.Kind != ConstValue {
		return false
	}
	for i := range v.Const.Len() {
		if v.Const.Float64At(i) != 0 {
			return false
		}
	}
	return true
}

// isQuantizedType reports whether QuantizeLinear produces d (and
// DequantizeLinear reads it; it reads int32 too).
func isQuantizedType(d DType) bool {
	switch d {
	case Int8, Uint8, Int16, Uint16, Int4, Uint4, Int2, Uint2,
		Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ, Float4E2M1:
		return true
	}
	return false
}

// isScaleType reports whether d is a float type scales and dequantized
// values come in.
func isScaleType(d DType) bool {
	return d == Float32 || d == Float16 || d == BFloat16
}

// optionalDTypeAttr reads an attribute holding an ONNX data type (absent
// or 0: InvalidDType, none).
func optionalDTypeAttr(n *onnx.Node, name string) (DType, error) {
	code, err := n.AttrInt(name, 0)
	if err != nil || code == 0 {
		return InvalidDType, err
	}
	dt, err := DTypeFromONNX(onnx.DataType(code))
	if err != nil {
		return InvalidDType, fmt.Errorf("attribute %s: %w", name, err)
	}
	return dt, nil
}

// ---------------------------------------------------------------- QuantizeLinear

// QuantizeLinear is ONNX's QuantizeLinear: for every element, with s and z
// the scale and zero point covering it,
//
//	q := round(round(x) / round(s))   // each round to Precision
//	y = clamp(roundHalfEven(q) + z, To's range)   // integer To
//	y = To(q + z)                                 // float To, saturating when Saturate
//
// The scale's shape decides the granularity as in ONNX: one element for
// the whole tensor, a vector along Axis, or blocks of BlockSize along Axis
// (the scale x's shape otherwise). The zero point (input 2) is optional
// and has the scale's shape; NaN quantizes to the zero point.
type QuantizeLinear struct {
	// Axis is the quantized axis of per-axis and blocked scales
	// (negative counts from the end).
	Axis int
	// BlockSize > 0 makes each scale cover that many consecutive indices
	// along Axis (blocked quantization).
	BlockSize int
	// To is the quantized type; Precision the float type the division
	// is computed in.
	To, Precision DType
	// Saturate clamps values out of a float8 type's range to its largest
	// finite value instead of Inf or NaN.
	Saturate bool
}

func (op *QuantizeLinear) Name() string { return "QuantizeLinear" }

func (op *QuantizeLinear) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 2, 3); err != nil {
		return nil, err
	}
	x, scale := in[0], in[1]
	if !x.DType.computable() {
		return nil, fmt.Errorf("input is %s, want a number type", x.DType)
	}
	if !scale.DType.computable() && scale.DType != Float8E8M0 {
		return nil, fmt.Errorf("scale is %s, want a number type", scale.DType)
	}
	if !isQuantizedType(op.To) {
		return nil, fmt.Errorf("quantizing to %s, want one of the quantized types", op.To)
	}
	switch op.Precision {
	case Float32, Float64, Float16, BFloat16:
	default:
		return nil, fmt.Errorf("precision %s, want a float type", op.Precision)
	}
	if _, err := resolveQuantLayout(x.Shape, scale.Shape, op.Axis, op.BlockSize); err != nil {
		return nil, err
	}
	if zp, ok := optional(in, 2); ok {
		if zp.DType != op.To {
			return nil, fmt.Errorf("zero point is %s, want %s", zp.DType, op.To)
		}
		if err := checkZeroPoint(zp.Shape, scale.Shape); err != nil {
			return nil, err
		}
	}
	return []Type{{op.To, x.Shape}}, nil
}

// roundToFloat rounds v to the nearest value of the float type dt.
func roundToFloat(dt DType, v float64) float64 {
	switch dt {
	case Float32:
		return float64(float32(v))
	case Float16:
		return float64(Float16ToFloat32(Float64ToFloat16(v)))
	case BFloat16:
		return float64(BFloat16ToFloat32(Float64ToBFloat16(v)))
	}
	return v
}

func (op *QuantizeLinear) Eval(in, out []*Tensor) error {
	x, scale, zp, y := Convert(in[0], Float64).Float64s(), in[1], optIn(in, 2), out[0]
	layout, err := resolveQuantLayout(y.shape, scale.shape, op.Axis, op.BlockSize)
	if err != nil {
		return err
	}
	s := make([]float64, scale.Len())
	for i := range s {
		s[i] = roundToFloat(op.Precision, scale.Float64At(i))
	}
	z := make([]float64, len(s))
	if zp != nil {
		for i := range z {
			z[i] = zp.Float64At(min(i, zp.Len()-1))
		}
	}
	lo, hi := intRange(op.To)
	isInt := op.To.IsInt()
	layout.eachScale(y.shape, func(i, si int) {
		q := roundToFloat(op.Precision, roundToFloat(op.Precision, x[i])/s[si])
		if !isInt {
			storeFloat(y, i, q+z[si], op.Saturate, RoundNearest)
			return
		}
		if math.IsNaN(q) {
			q = 0
		}
		r := min(max(math.RoundToEven(q)+z[si], lo), hi)
		storeInt(y, i, int64(r), true, RoundUp)
	})
	return nil
}

func importQuantizeLinear(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	x, scale, zp := in[0], in[1], optIn(in, 2)
	switch x.DType {
	case Float32, Float16, BFloat16, Int32:
	default:
		return nil, fmt.Errorf("input x is %s, want float32, float16, bfloat16 or int32", x.DType)
	}
	if !isScaleType(scale.DType) && scale.DType != Int32 && scale.DType != Float8E8M0 {
		return nil, fmt.Errorf("y_scale is %s, want float32, float16, bfloat16, int32 or float8e8m0", scale.DType)
	}
	to, err := optionalDTypeAttr(n, "output_dtype")
	if err != nil {
		return nil, err
	}
	switch {
	case zp != nil && to != InvalidDType && to != zp.DType:
		return nil, fmt.Errorf("attribute output_dtype is %s but y_zero_point is %s", to, zp.DType)
	case zp != nil:
		to = zp.DType
	case to == InvalidDType:
		to = Uint8
	}
	if !isQuantizedType(to) {
		return nil, fmt.Errorf("%w: quantizing to %s (want int8, uint8, int16, uint16, int4, uint4, int2, uint2, a float8 type or float4e2m1)", ErrNotSupported, to)
	}
	precision, err := optionalDTypeAttr(n, "precision")
	if err != nil {
		return nil, err
	}
	switch {
	case precision == InvalidDType && isScaleType(scale.DType):
		precision = scale.DType
	case precision == InvalidDType && scale.DType == Int32:
		precision = Float64 // an integer quotient is exact in float64
	case precision == InvalidDType:
		precision = Float32 // a float8e8m0 scale is a power of two
	case precision != Float32 && precision != Float16 && precision != BFloat16 && precision != Float64:
		return nil, fmt.Errorf("attribute precision is %s, want a float type", precision)
	}
	saturate, err := n.AttrInt("saturate", 1)
	if err != nil {
		return nil, err
	}
	axis, block, _, err := quantAttrs(n, x.Shape, scale.Shape)
	if err != nil {
		return nil, err
	}
	if zp != nil {
		if err := checkZeroPoint(zp.Shape, scale.Shape); err != nil {
			return nil, err
		}
	}
	op := &QuantizeLinear{Axis: axis, BlockSize: block, To: to, Precision: precision, Saturate: saturate != 0}
	if zp == nil {
		return one(im.emit1(op, x, scale))
	}
	return one(im.emit1(op, x, scale, zp))
}

// ---------------------------------------------------------------- DequantizeLinear

// importDequantizeLinear imports y = (x - zero point) · scale, computed in
// float32 (as ONNX's reference does) and converted to the output type.
func importDequantizeLinear(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	x, scale, zp := in[0], in[1], optIn(in, 2)
	if !isQuantizedType(x.DType) && x.DType != Int32 {
		return nil, fmt.Errorf("input x is %s, want int8, uint8, int16, uint16, int32, int4, uint4, int2, uint2, a float8 type or float4e2m1", x.DType)
	}
	if !isScaleType(scale.DType) && scale.DType != Float8E8M0 {
		return nil, fmt.Errorf("x_scale is %s, want float32, float16, bfloat16 or float8e8m0", scale.DType)
	}
	to, err := optionalDTypeAttr(n, "output_dtype")
	if err != nil {
		return nil, err
	}
	if to == InvalidDType {
		to = scale.DType
	}
	if !isScaleType(to) {
		return nil, fmt.Errorf("output type %s (from output_dtype or x_scale), want float32, float16 or bfloat16", to)
	}
	_, _, layout, err := quantAttrs(n, x.Shape, scale.Shape)
	if err != nil {
		return nil, err
	}
	xf, err := im.castTo(x, Float32)
	if err != nil {
		return nil, err
	}
	if zp != nil {
		if zp.DType != x.DType {
			return nil, fmt.Errorf("x_zero_point is %s, want x's type %s", zp.DType, x.DType)
		}
		if err := checkZeroPoint(zp.Shape, scale.Shape); err != nil {
			return nil, err
		}
		if !isConstZero(zp) {
			z, err := im.castTo(zp, Float32)
			if err != nil {
				return nil, err
			}
			if z, err = im.broadcastQuantParam(z, x.Shape, layout); err != nil {
				return nil, err
			}
			if xf, err = im.emit1(&Binary{Fn: Sub}, xf, z); err != nil {
				return nil, err
			}
		}
	}
	s, err := im.castTo(scale, Float32)
	if err != nil {
		return nil, err
	}
	if s, err = im.broadcastQuantParam(s, x.Shape, layout); err != nil {
		return nil, err
	}
	y, err := im.emit1(&Binary{Fn: Mul}, xf, s)
	if err != nil {
		return nil, err
	}
	return one(im.castTo(y, to))
}

// castTo converts v to dt (v itself when it has that type already).
func (im *importer) castTo(v *Value, dt DType) (*Value, error) {
	if v.DType == dt {
		return v, nil
	}
	return im.emit1(&Cast{To: dt, Saturate: true}, v)
}

// ---------------------------------------------------------------- DynamicQuantizeLinear

// DynamicQuantizeLinear quantizes float32 x to uint8 with a scale and zero
// point computed from x's range (widened to include 0), in float32 as
// ONNX's function body does:
//
//	lo, hi := min(0, min(x)), max(0, max(x))
//	scale = (hi - lo) / 255
//	zeroPoint = roundHalfEven(clamp(0 - lo/scale, 0, 255))
//	y = clamp(roundHalfEven(x/scale) + zeroPoint, 0, 255)
//
// Outputs y, scale (a float32 scalar) and zeroPoint (a uint8 scalar); an
// all-zero x gives scale 0, zero point 0 and y 0.
type DynamicQuantizeLinear struct{}

func (op *DynamicQuantizeLinear) Name() string { return "DynamicQuantizeLinear" }

func (op *DynamicQuantizeLinear) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	if in[0].DType != Float32 {
		return nil, fmt.Errorf("input is %s, want float32", in[0].DType)
	}
	return []Type{{Uint8, in[0].Shape}, {Float32, Shape{}}, {Uint8, Shape{}}}, nil
}

func (op *DynamicQuantizeLinear) Eval(in, out []*Tensor) error {
	x := in[0].Float32s()
	var lo, hi float32
	for _, v := range x {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	scale := (hi - lo) / 255
	var zp float32
	if z := 0 - lo/scale; scale != 0 && z == z {
		zp = float32(math.RoundToEven(float64(min(max(z, 0), 255))))
	}
	y := out[0].Uint8s()
	for i, v := range x {
		q := float32(0)
		if scale != 0 {
			q = v / scale
		}
		if q != q { // NaN
			q = 0
		}
		y[i] = uint8(min(max(math.RoundToEven(float64(q))+float64(zp), 0), 255))
	}
	if out[1] != nil {
		out[1].Float32s()[0] = scale
	}
	if out[2] != nil {
		out[2].Uint8s()[0] = uint8(zp)
	}
	return nil
}

func importDynamicQuantizeLinear(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	return im.emit(&DynamicQuantizeLinear{}, in[0])
}

// ---------------------------------------------------------------- integer products

// zeroPointShift returns Cast(x, dt) - Cast(zp, dt) with zp reshaped by
// shape (nil: as it is), or Cast(x, dt) alone when zp is absent or zero.
func (im *importer) zeroPointShift(x, zp *Value, dt DType, shape Shape, what string) (*Value, error) {
	xc, err := im.castTo(x, dt)
	if err != nil || zp == nil || isConstZero(zp) {
		return xc, err
	}
	if zp.DType != x.DType {
		return nil, fmt.Errorf("%s zero point is %s, want its input's type %s", what, zp.DType, x.DType)
	}
	z, err := im.castTo(zp, dt)
	if err != nil {
		return nil, err
	}
	if shape != nil {
		if z, err = im.reshape(z, shape); err != nil {
			return nil, err
		}
	}
	return im.emit1(&Binary{Fn: Sub}, xc, z)
}

func isInt8OrUint8(d DType) bool { return d == Int8 || d == Uint8 }

// matMulParamShape is how a per-tensor, per-row (of a) or per-column (of
// b) scale or zero point broadcasts against the product's operand x: a
// scalar, [M, 1] for a row vector of a's M rows, x's last axis for b's
// columns, or its own shape when it has x's rank.
func matMulParamShape(p, x Shape, rows bool, what string) (Shape, error) {
	switch {
	case p.Size() == 1 && len(p) <= 1:
		return Shape{}, nil
	case len(p) == len(x) && len(x) >= 2:
		if _, err := BroadcastShapes(p, x); err != nil {
			return nil, fmt.Errorf("%s %v does not broadcast against its input %v", what, p, x)
		}
		return p, nil
	case len(p) == 1 && len(x) >= 2 && rows && p[0] == x[len(x)-2]:
		return Shape{p[0], 1}, nil
	case len(p) == 1 && len(x) >= 2 && !rows && p[0] == x[len(x)-1]:
		return p, nil
	}
	kind := "column of b"
	if rows {
		kind = "row of a"
	}
	return nil, fmt.Errorf("%s %v for input %v: want a scalar or one per %s", what, p, x, kind)
}

// importMatMulInteger imports (A - a_zero_point) · (B - b_zero_point) in
// int32.
func importMatMulInteger(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 4); err != nil {
		return nil, err
	}
	a, b := in[0], in[1]
	if !isInt8OrUint8(a.DType) || !isInt8OrUint8(b.DType) {
		return nil, fmt.Errorf("inputs are %s and %s, want int8 or uint8", a.DType, b.DType)
	}
	azp, bzp := optIn(in, 2), optIn(in, 3)
	as, bs := Shape(nil), Shape(nil)
	var err error
	if azp != nil {
		if as, err = matMulParamShape(azp.Shape, a.Shape, true, "a_zero_point"); err != nil {
			return nil, err
		}
	}
	if bzp != nil {
		if bs, err = matMulParamShape(bzp.Shape, b.Shape, false, "b_zero_point"); err != nil {
			return nil, err
		}
	}
	a32, err := im.zeroPointShift(a, azp, Int32, as, "a")
	if err != nil {
		return nil, err
	}
	b32, err := im.zeroPointShift(b, bzp, Int32, bs, "b")
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&MatMul{}, a32, b32))
}

// importConvInteger imports Conv(x - x_zero_point, w - w_zero_point) with
// int32 output, computed in float64 (exact for any realistic kernel).
func importConvInteger(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 4); err != nil {
		return nil, err
	}
	acc, err := im.integerConv(n, in[0], in[1], optIn(in, 2), optIn(in, 3), nil)
	if err != nil {
		return nil, err
	}
	return one(im.castTo(acc, Int32))
}

// integerConv is the float64 Conv of (x - xzp) and (w - wzp) plus bias
// (int32, optional), with the node's convolution attributes. w's zero
// point is a scalar or one per output channel.
func (im *importer) integerConv(n *onnx.Node, x, w, xzp, wzp, bias *Value) (*Value, error) {
	if !isInt8OrUint8(x.DType) || !isInt8OrUint8(w.DType) {
		return nil, fmt.Errorf("x and w are %s and %s, want int8 or uint8", x.DType, w.DType)
	}
	if len(w.Shape) < 3 {
		return nil, fmt.Errorf("weights %v, want MC<kernel>", w.Shape)
	}
	if xzp != nil && xzp.Shape.Size() != 1 {
		return nil, fmt.Errorf("x zero point %v, want a scalar", xzp.Shape)
	}
	var wShape Shape
	if wzp != nil {
		switch {
		case wzp.Shape.Size() == 1 && len(wzp.Shape) <= 1:
			wShape = Shape{}
		case len(wzp.Shape) == 1 && wzp.Shape[0] == w.Shape[0]:
			wShape = Shape(ones(len(w.Shape)))
			wShape[0] = w.Shape[0]
		default:
			return nil, fmt.Errorf("w zero point %v for weights %v: want a scalar or one per output channel", wzp.Shape, w.Shape)
		}
	}
	var xs Shape
	if xzp != nil {
		xs = Shape{}
	}
	xf, err := im.zeroPointShift(x, xzp, Float64, xs, "x")
	if err != nil {
		return nil, err
	}
	wf, err := im.zeroPointShift(w, wzp, Float64, wShape, "w")
	if err != nil {
		return nil, err
	}
	args := []*Value{xf, wf}
	if bias != nil {
		if bias.DType != Int32 {
			return nil, fmt.Errorf("bias is %s, want int32", bias.DType)
		}
		bf, err := im.castTo(bias, Float64)
		if err != nil {
			return nil, err
		}
		args = append(args, bf)
	}
	outs, err := importConv(im, n, args)
	if err != nil {
		return nil, err
	}
	return outs[0], nil
}

// requantize returns y = saturate(roundHalfEven(acc · multiplier) + zp)
// of type to, acc and multiplier float64; zp may be nil.
func (im *importer) requantize(acc, multiplier, zp *Value, to DType) (*Value, error) {
	d, err := im.emit1(&Binary{Fn: Mul}, acc, multiplier)
	if err != nil {
		return nil, err
	}
	args := []*Value{d, im.constant(FromFloat64s(Shape{}, []float64{1}))}
	if zp != nil {
		z, err := im.reshape(zp, Shape{})
		if err != nil {
			return nil, err
		}
		args = append(args, z)
	}
	return im.emit1(&QuantizeLinear{Axis: -1, To: to, Precision: Float64, Saturate: true}, args...)
}

// scaleProduct returns xScale · wScale / yScale computed in the scales'
// type (as ONNX's reference does), as float64; xShape and wShape reshape
// the first two for broadcasting.
func (im *importer) scaleProduct(xScale, wScale, yScale *Value, xShape, wShape Shape) (*Value, error) {
	if xScale.DType != wScale.DType || xScale.DType != yScale.DType || !isScaleType(xScale.DType) {
		return nil, fmt.Errorf("scales are %s, %s and %s, want one of float32, float16, bfloat16", xScale.DType, wScale.DType, yScale.DType)
	}
	if yScale.Shape.Size() != 1 {
		return nil, fmt.Errorf("%w: output scale %v (only one output scale)", ErrNotSupported, yScale.Shape)
	}
	xs, err := im.reshape(xScale, xShape)
	if err != nil {
		return nil, err
	}
	ws, err := im.reshape(wScale, wShape)
	if err != nil {
		return nil, err
	}
	ys, err := im.reshape(yScale, Shape{})
	if err != nil {
		return nil, err
	}
	m, err := im.emit1(&Binary{Fn: Mul}, xs, ws)
	if err != nil {
		return nil, err
	}
	if m, err = im.emit1(&Binary{Fn: Div}, m, ys); err != nil {
		return nil, err
	}
	return im.castTo(m, Float64)
}

// outputZeroPoint checks the output's zero point and returns it with the
// output type, its type.
func outputZeroPoint(zp *Value) (*Value, DType, error) {
	if zp.Shape.Size() != 1 {
		return nil, InvalidDType, fmt.Errorf("%w: output zero point %v (only one output zero point)", ErrNotSupported, zp.Shape)
	}
	if !isInt8OrUint8(zp.DType) {
		return nil, InvalidDType, fmt.Errorf("output zero point is %s, want int8 or uint8", zp.DType)
	}
	return zp, zp.DType, nil
}

// importQLinearMatMul imports
// y = saturate(round((a - a_zp)·(b - b_zp) · a_scale·b_scale/y_scale) + y_zp)
// with per-tensor or per-row a and per-tensor or per-column b parameters.
func importQLinearMatMul(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 8, 8); err != nil {
		return nil, err
	}
	a, aScale, b, bScale, yScale := in[0], in[1], in[3], in[4], in[6]
	if !isInt8OrUint8(a.DType) || !isInt8OrUint8(b.DType) {
		return nil, fmt.Errorf("%w: inputs a and b are %s and %s (want int8 or uint8)", ErrNotSupported, a.DType, b.DType)
	}
	as, err := matMulParamShape(aScale.Shape, a.Shape, true, "a_scale")
	if err != nil {
		return nil, err
	}
	bs, err := matMulParamShape(bScale.Shape, b.Shape, false, "b_scale")
	if err != nil {
		return nil, err
	}
	for _, p := range [][2]*Value{{in[2], aScale}, {in[5], bScale}} {
		if p[0] != nil {
			if err := checkZeroPoint(p[0].Shape, p[1].Shape); err != nil {
				return nil, err
			}
		}
	}
	af, err := im.zeroPointShift(a, in[2], Float64, as, "a")
	if err != nil {
		return nil, err
	}
	bf, err := im.zeroPointShift(b, in[5], Float64, bs, "b")
	if err != nil {
		return nil, err
	}
	acc, err := im.emit1(&MatMul{}, af, bf)
	if err != nil {
		return nil, err
	}
	mult, err := im.scaleProduct(aScale, bScale, yScale, as, bs)
	if err != nil {
		return nil, err
	}
	zp, to, err := outputZeroPoint(in[7])
	if err != nil {
		return nil, err
	}
	return one(im.requantize(acc, mult, zp, to))
}

// importQLinearConv imports
// y = saturate(round(Conv(x - x_zp, w - w_zp, B) · x_scale·w_scale/y_scale) + y_zp)
// with per-tensor or per-output-channel w parameters.
func importQLinearConv(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 8, 9); err != nil {
		return nil, err
	}
	x, xScale, w, wScale, yScale := in[0], in[1], in[3], in[4], in[6]
	if xScale.Shape.Size() != 1 {
		return nil, fmt.Errorf("x_scale %v, want a scalar", xScale.Shape)
	}
	acc, err := im.integerConv(n, x, w, in[2], in[5], optIn(in, 8))
	if err != nil {
		return nil, err
	}
	ws := Shape{}
	if wScale.Shape.Size() != 1 {
		if len(wScale.Shape) != 1 || wScale.Shape[0] != w.Shape[0] {
			return nil, fmt.Errorf("w_scale %v for weights %v: want a scalar or one per output channel", wScale.Shape, w.Shape)
		}
		ws = Shape(ones(len(w.Shape)))
		ws[1] = w.Shape[0]
	}
	mult, err := im.scaleProduct(xScale, wScale, yScale, Shape{}, ws)
	if err != nil {
		return nil, err
	}
	zp, to, err := outputZeroPoint(in[7])
	if err != nil {
		return nil, err
	}
	return one(im.requantize(acc, mult, zp, to))
}
