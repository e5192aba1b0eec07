package tpu

import (
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/dstune/dstune/ir"
)

// The emitter writes StableHLO in MLIR's generic op syntax, one op a line:
//
//	%3 = "stablehlo.add"(%1, %2) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
//
// Every helper checks its operands' types the way the StableHLO verifier
// will and records the first mismatch (later ops are still emitted, with
// placeholder types, so lowering code needs no error checks per op); the
// caller reads it from fn.err. That shape check of every emitted op is the
// semantic check available without a plugin.

// value is an SSA value: its name in the text ("%7", "%5#1") and its type.
type value struct {
	name string
	t    ir.Type
}

func (v value) dtype() ir.DType { return v.t.DType }
func (v value) shape() ir.Shape { return v.t.Shape }
func (v value) rank() int       { return len(v.t.Shape) }

// elemType is the MLIR element type of d.
func elemType(d ir.DType) (string, bool) {
	switch d {
	case ir.Float32:
		return "f32", true
	case ir.Float64:
		return "f64", true
	case ir.Float16:
		return "f16", true
	case ir.BFloat16:
		return "bf16", true
	case ir.Int8:
		return "i8", true
	case ir.Int16:
		return "i16", true
	case ir.Int32:
		return "i32", true
	case ir.Int64:
		return "i64", true
	case ir.Uint8:
		return "ui8", true
	case ir.Uint16:
		return "ui16", true
	case ir.Uint32:
		return "ui32", true
	case ir.Uint64:
		return "ui64", true
	case ir.Bool:
		return "i1", true
	}
	return "", false
}

// tensorType is the MLIR type of t: tensor<2x3xf32>, tensor<f32>.
func tensorType(t ir.Type) string {
	e, ok := elemType(t.DType)
	if !ok {
		e = "none"
	}
	var b strings.Builder
	b.WriteString("tensor<")
	for _, d := range t.Shape {
		b.WriteString(strconv.Itoa(d))
		b.WriteByte('x')
	}
	b.WriteString(e)
	b.WriteByte('>')
	return b.String()
}

// fn is a function body (or a region of one) being emitted. Regions share
// their function's counter so that names stay unique in nested scopes.
type fn struct {
	lines  *strings.Builder
	indent string
	next   *int
	err    *error
}

func newFn(indent string) *fn {
	var err error
	next := 0
	return &fn{lines: &strings.Builder{}, indent: indent, next: &next, err: &err}
}

// fail records the first error.
func (f *fn) fail(format string, args ...any) {
	if *f.err == nil {
		*f.err = fmt.Errorf(format, args...)
	}
}

// Err is the first type error of the function or any of its regions.
func (f *fn) Err() error { return *f.err }

func (f *fn) fresh() string {
	n := *f.next
	*f.next = n + 1
	return "%" + strconv.Itoa(n)
}

// op emits a generic op and returns its results. attrs is the attribute
// dictionary's contents ("" for none); regions are already rendered.
func (f *fn) op(name string, operands []value, attrs string, regions []string, results ...ir.Type) []value {
	var b strings.Builder
	b.WriteString(f.indent)
	out := make([]value, len(results))
	if len(results) > 0 {
		base := f.fresh()
		if len(results) == 1 {
			out[0] = value{base, results[0]}
		} else {
			for i, t := range results {
				out[i] = value{base + "#" + strconv.Itoa(i), t}
			}
			base += ":" + strconv.Itoa(len(results))
		}
		b.WriteString(base)
		b.WriteString(" = ")
	}
	b.WriteString(strconv.Quote(name))
	b.WriteByte('(')
	for i, v := range operands {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(v.name)
	}
	b.WriteByte(')')
	if len(regions) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(regions, ", "))
		b.WriteByte(')')
	}
	if attrs != "" {
		b.WriteString(" {")
		b.WriteString(attrs)
		b.WriteByte('}')
	}
	b.WriteString(" : (")
	for i, v := range operands {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(tensorType(v.t))
	}
	b.WriteString(") -> ")
	if len(results) == 1 {
		b.WriteString(tensorType(results[0]))
	} else {
		b.WriteByte('(')
		for i, t := range results {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(tensorType(t))
		}
		b.WriteByte(')')
	}
	b.WriteByte('\n')
	f.lines.WriteString(b.String())
	return out
}

func (f *fn) op1(name string, operands []value, attrs string, result ir.Type) value {
	return f.op(name, operands, attrs, nil, result)[0]
}

// region starts a nested block with arguments of the given types; build
// fills it and returns the values to yield with stablehlo.return.
func (f *fn) region(args []ir.Type, build func(r *fn, args []value) []value) string {
	r := &fn{lines: &strings.Builder{}, indent: f.indent + "  ", next: f.next, err: f.err}
	vals := make([]value, len(args))
	var head strings.Builder
	head.WriteString("{\n")
	head.WriteString(f.indent + "^bb0(")
	for i, t := range args {
		vals[i] = value{r.fresh(), t}
		if i > 0 {
			head.WriteString(", ")
		}
		head.WriteString(vals[i].name + ": " + tensorType(t))
	}
	head.WriteString("):\n")
	if len(args) == 0 {
		head.Reset()
		head.WriteString("{\n")
	}
	ret := build(r, vals)
	r.op("stablehlo.return", ret, "", nil)
	return head.String() + r.lines.String() + f.indent + "}"
}

func scalarType(d ir.DType) ir.Type { return ir.Type{DType: d, Shape: ir.Shape{}} }

func sameShape(a, b ir.Shape) bool { return ir.Shape(a).Equal(b) }

// ---------------------------------------------------------------- constants

// constant emits a tensor constant (hex-encoded raw little-endian bytes,
// so every bit is kept; bools as a list).
func (f *fn) constant(t *ir.Tensor) value {
	typ := ir.Type{DType: t.DType(), Shape: t.Shape()}
	if _, ok := elemType(t.DType()); !ok {
		f.fail("constant of dtype %s is not supported", t.DType())
		return value{"%invalid", typ}
	}
	var lit string
	switch {
	case t.DType() == ir.Bool:
		vs := t.Bools()
		parts := make([]string, len(vs))
		for i, v := range vs {
			parts[i] = strconv.FormatBool(v)
		}
		if allSame(parts) && len(parts) > 0 {
			lit = parts[0]
		} else {
			lit = nestedList(parts, t.Shape())
		}
	case t.Len() == 0:
		lit = "[]"
	default:
		data := t.Bytes()
		es := t.DType().Size()
		splat := true
		for i := es; i < len(data); i++ {
			if data[i] != data[i-es] {
				splat = false
				break
			}
		}
		if splat {
			data = data[:es]
		}
		lit = `"0x` + strings.ToUpper(hex.EncodeToString(data)) + `"`
	}
	return f.op1("stablehlo.constant", nil, "value = dense<"+lit+"> : "+tensorType(typ), typ)
}

func allSame(s []string) bool {
	for _, x := range s {
		if x != s[0] {
			return false
		}
	}
	return true
}

// nestedList renders flat elements as MLIR's nested list for a shape.
func nestedList(flat []string, shape ir.Shape) string {
	if len(shape) == 0 {
		return flat[0]
	}
	n := shape[0]
	step := 1
	for _, d := range shape[1:] {
		step *= d
	}
	parts := make([]string, n)
	for i := range n {
		parts[i] = nestedList(flat[i*step:(i+1)*step], shape[1:])
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// scalarConst emits a scalar constant of dtype d holding v (converted as
// Go converts; floats exactly when representable).
func (f *fn) scalarConst(d ir.DType, v float64) value {
	return f.constant(scalarTensor(d, v))
}

// fullConst is a constant of type t with every element v (a splat).
func (f *fn) fullConst(t ir.Type, v float64) value {
	s := scalarTensor(t.DType, v)
	if len(t.Shape) == 0 {
		return f.constant(s)
	}
	typ := ir.Type{DType: t.DType, Shape: t.Shape.Clone()}
	var lit string
	if t.DType == ir.Bool {
		lit = strconv.FormatBool(v != 0)
	} else {
		lit = `"0x` + strings.ToUpper(hex.EncodeToString(s.Bytes())) + `"`
	}
	return f.op1("stablehlo.constant", nil, "value = dense<"+lit+"> : "+tensorType(typ), typ)
}

func scalarTensor(d ir.DType, v float64) *ir.Tensor {
	t := ir.NewTensor(d, ir.Shape{})
	b := t.Bytes()
	put := func(u uint64, n int) {
		for i := range n {
			b[i] = byte(u >> (8 * i))
		}
	}
	switch d {
	case ir.Float32:
		put(uint64(math.Float32bits(float32(v))), 4)
	case ir.Float64:
		put(math.Float64bits(v), 8)
	case ir.Float16, ir.BFloat16:
		c := ir.Convert(ir.FromFloat64s(ir.Shape{}, []float64{v}), d)
		copy(b, c.Bytes())
	case ir.Int8, ir.Uint8:
		put(uint64(int64(v)), 1)
	case ir.Int16, ir.Uint16:
		put(uint64(int64(v)), 2)
	case ir.Int32, ir.Uint32:
		put(uint64(int64(v)), 4)
	case ir.Int64:
		put(uint64(int64(v)), 8)
	case ir.Uint64:
		put(uint64(v), 8)
	case ir.Bool:
		if v != 0 {
			b[0] = 1
		}
	}
	return t
}

// ---------------------------------------------------------------- element-wise

// unary emits an element-wise op of one operand with the operand's type.
func (f *fn) unary(name string, x value) value {
	return f.op1(name, []value{x}, "", x.t)
}

// binary emits an element-wise op of two operands of the same type.
func (f *fn) binary(name string, a, b value) value {
	if a.dtype() != b.dtype() || !sameShape(a.shape(), b.shape()) {
		f.fail("%s of %v and %v: operand types differ", name, a.t, b.t)
	}
	return f.op1(name, []value{a, b}, "", a.t)
}

func (f *fn) add(a, b value) value { return f.binary("stablehlo.add", a, b) }
func (f *fn) sub(a, b value) value { return f.binary("stablehlo.subtract", a, b) }
func (f *fn) mul(a, b value) value { return f.binary("stablehlo.multiply", a, b) }
func (f *fn) div(a, b value) value { return f.binary("stablehlo.divide", a, b) }
func (f *fn) max(a, b value) value { return f.binary("stablehlo.maximum", a, b) }
func (f *fn) min(a, b value) value { return f.binary("stablehlo.minimum", a, b) }
func (f *fn) and(a, b value) value { return f.binary("stablehlo.and", a, b) }
func (f *fn) or(a, b value) value  { return f.binary("stablehlo.or", a, b) }

// compare emits stablehlo.compare with direction EQ, NE, LT, LE, GT or GE.
// Floats compare as FLOAT (NaN unordered: every comparison but NE is
// false), unsigned integers as UNSIGNED, the rest as SIGNED.
func (f *fn) compare(dir string, a, b value) value {
	if a.dtype() != b.dtype() || !sameShape(a.shape(), b.shape()) {
		f.fail("compare of %v and %v: operand types differ", a.t, b.t)
	}
	kind := "SIGNED"
	switch {
	case a.dtype().IsFloat():
		kind = "FLOAT"
	case a.dtype() == ir.Bool || (a.dtype().IsInt() && !a.dtype().IsSigned()):
		kind = "UNSIGNED"
	}
	attrs := fmt.Sprintf("comparison_direction = #stablehlo<comparison_direction %s>, compare_type = #stablehlo<comparison_type %s>", dir, kind)
	return f.op1("stablehlo.compare", []value{a, b}, attrs, ir.Type{DType: ir.Bool, Shape: a.shape()})
}

// selectOp is stablehlo.select: pred ? a : b, pred a bool of the same
// shape or a scalar.
func (f *fn) selectOp(pred, a, b value) value {
	if pred.dtype() != ir.Bool || (pred.rank() != 0 && !sameShape(pred.shape(), a.shape())) {
		f.fail("select predicate %v for operands %v", pred.t, a.t)
	}
	if a.dtype() != b.dtype() || !sameShape(a.shape(), b.shape()) {
		f.fail("select of %v and %v: operand types differ", a.t, b.t)
	}
	return f.op1("stablehlo.select", []value{pred, a, b}, "", a.t)
}

// convert changes the element type (stablehlo.convert: float to integer
// truncates toward zero; to bool tests != 0).
func (f *fn) convert(x value, d ir.DType) value {
	if x.dtype() == d {
		return x
	}
	return f.op1("stablehlo.convert", []value{x}, "", ir.Type{DType: d, Shape: x.shape()})
}

// bitcast reinterprets the bits as another type of the same width.
func (f *fn) bitcast(x value, d ir.DType) value {
	if x.dtype().Size() != d.Size() {
		f.fail("bitcast %v to %s: widths differ", x.t, d)
	}
	return f.op1("stablehlo.bitcast_convert", []value{x}, "", ir.Type{DType: d, Shape: x.shape()})
}

// ---------------------------------------------------------------- shapes

func intList(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ", ")
}

// i64Array renders an array<i64: ...> attribute.
func i64Array(xs []int) string {
	if len(xs) == 0 {
		return "array<i64>"
	}
	return "array<i64: " + intList(xs) + ">"
}

func (f *fn) reshape(x value, shape ir.Shape) value {
	if x.shape().Size() != shape.Size() {
		f.fail("reshape %v to %v: sizes differ", x.t, shape)
	}
	if sameShape(x.shape(), shape) {
		return x
	}
	return f.op1("stablehlo.reshape", []value{x}, "", ir.Type{DType: x.dtype(), Shape: shape.Clone()})
}

// broadcastInDim places x's dimension i at dimension dims[i] of shape.
func (f *fn) broadcastInDim(x value, shape ir.Shape, dims []int) value {
	if len(dims) != x.rank() {
		f.fail("broadcast_in_dim of %v with %d dimension mappings", x.t, len(dims))
	} else {
		for i, d := range dims {
			if d < 0 || d >= len(shape) || (x.shape()[i] != 1 && x.shape()[i] != shape[d]) || (i > 0 && dims[i-1] >= d) {
				f.fail("broadcast_in_dim of %v to %v with dimensions %v", x.t, shape, dims)
				break
			}
		}
	}
	if sameShape(x.shape(), shape) {
		return x
	}
	return f.op1("stablehlo.broadcast_in_dim", []value{x}, "broadcast_dimensions = "+i64Array(dims), ir.Type{DType: x.dtype(), Shape: shape.Clone()})
}

// broadcastTo broadcasts x to shape with numpy rules (trailing alignment).
func (f *fn) broadcastTo(x value, shape ir.Shape) value {
	off := len(shape) - x.rank()
	if off < 0 {
		f.fail("broadcast %v to lower rank %v", x.t, shape)
		return x
	}
	dims := make([]int, x.rank())
	for i := range dims {
		dims[i] = off + i
	}
	return f.broadcastInDim(x, shape, dims)
}

// splat is a scalar constant broadcast to t.
func (f *fn) splat(t ir.Type, v float64) value { return f.fullConst(t, v) }

func (f *fn) transpose(x value, perm []int) value {
	if len(perm) != x.rank() {
		f.fail("transpose of %v with permutation %v", x.t, perm)
		return x
	}
	identity := true
	shape := make(ir.Shape, len(perm))
	for i, p := range perm {
		if p < 0 || p >= x.rank() {
			f.fail("transpose of %v with permutation %v", x.t, perm)
			return x
		}
		shape[i] = x.shape()[p]
		identity = identity && p == i
	}
	if identity {
		return x
	}
	return f.op1("stablehlo.transpose", []value{x}, "permutation = "+i64Array(perm), ir.Type{DType: x.dtype(), Shape: shape})
}

// slice takes x[start:limit:stride] on every axis (positive strides).
func (f *fn) slice(x value, start, limit, stride []int) value {
	shape := make(ir.Shape, x.rank())
	for d := range shape {
		if start[d] < 0 || limit[d] > x.shape()[d] || start[d] > limit[d] || stride[d] < 1 {
			f.fail("slice of %v from %v to %v by %v", x.t, start, limit, stride)
			return x
		}
		shape[d] = (limit[d] - start[d] + stride[d] - 1) / stride[d]
	}
	if sameShape(shape, x.shape()) {
		return x
	}
	attrs := "start_indices = " + i64Array(start) + ", limit_indices = " + i64Array(limit) + ", strides = " + i64Array(stride)
	return f.op1("stablehlo.slice", []value{x}, attrs, ir.Type{DType: x.dtype(), Shape: shape})
}

func (f *fn) concatenate(axis int, xs []value) value {
	if len(xs) == 1 {
		return xs[0]
	}
	shape := xs[0].shape().Clone()
	shape[axis] = 0
	for _, x := range xs {
		if x.rank() != len(shape) || x.dtype() != xs[0].dtype() {
			f.fail("concatenate of %v and %v", xs[0].t, x.t)
			return xs[0]
		}
		for d := range shape {
			if d != axis && x.shape()[d] != shape[d] {
				f.fail("concatenate of %v and %v on axis %d", xs[0].t, x.t, axis)
			}
		}
		shape[axis] += x.shape()[axis]
	}
	return f.op1("stablehlo.concatenate", xs, "dimension = "+strconv.Itoa(axis)+" : i64", ir.Type{DType: xs[0].dtype(), Shape: shape})
}

func (f *fn) reverse(x value, axes []int) value {
	if len(axes) == 0 {
		return x
	}
	return f.op1("stablehlo.reverse", []value{x}, "dimensions = "+i64Array(axes), x.t)
}

func (f *fn) pad(x, fill value, lo, hi, interior []int) value {
	shape := make(ir.Shape, x.rank())
	for d := range shape {
		n := x.shape()[d]
		shape[d] = lo[d] + hi[d] + n + max(n-1, 0)*interior[d]
	}
	attrs := "edge_padding_low = " + i64Array(lo) + ", edge_padding_high = " + i64Array(hi) + ", interior_padding = " + i64Array(interior)
	return f.op1("stablehlo.pad", []value{x, fill}, attrs, ir.Type{DType: x.dtype(), Shape: shape})
}

// iota is 0, 1, 2, ... along axis of a tensor of type t.
func (f *fn) iota(t ir.Type, axis int) value {
	return f.op1("stablehlo.iota", nil, "iota_dimension = "+strconv.Itoa(axis)+" : i64", t)
}

// ---------------------------------------------------------------- reductions

// reduceKind names the body of a reduction.
type reduceKind uint8

const (
	reduceAdd reduceKind = iota
	reduceMax
	reduceMin
	reduceMul
	reduceAnd
	reduceOr
)

var reduceBodies = [...]string{"stablehlo.add", "stablehlo.maximum", "stablehlo.minimum", "stablehlo.multiply", "stablehlo.and", "stablehlo.or"}

// reduce reduces x over axes with the given body, starting from init (a
// scalar of x's dtype). The result drops the reduced axes.
func (f *fn) reduce(x value, init value, kind reduceKind, axes []int) value {
	if init.rank() != 0 || init.dtype() != x.dtype() {
		f.fail("reduce of %v with initial value %v", x.t, init.t)
	}
	var shape ir.Shape = ir.Shape{}
	reduced := map[int]bool{}
	for _, a := range axes {
		if a < 0 || a >= x.rank() || reduced[a] {
			f.fail("reduce of %v over axes %v", x.t, axes)
			return x
		}
		reduced[a] = true
	}
	for d, n := range x.shape() {
		if !reduced[d] {
			shape = append(shape, n)
		}
	}
	st := scalarType(x.dtype())
	body := f.region([]ir.Type{st, st}, func(r *fn, a []value) []value {
		return []value{r.binary(reduceBodies[kind], a[0], a[1])}
	})
	return f.op("stablehlo.reduce", []value{x, init}, "dimensions = "+i64Array(axes), []string{body}, ir.Type{DType: x.dtype(), Shape: shape})[0]
}

// ---------------------------------------------------------------- linear algebra

// dotGeneral contracts lhs and rhs: batch dimensions pair up, contracting
// dimensions are summed over; the result is batch dims, then lhs free
// dims, then rhs free dims. Float operands accumulate in their own type
// at the platform's best precision (HIGHEST: no TF32 shortcuts on GPU).
func (f *fn) dotGeneral(lhs, rhs value, lb, rb, lc, rc []int) value {
	if lhs.dtype() != rhs.dtype() || len(lb) != len(rb) || len(lc) != len(rc) {
		f.fail("dot_general of %v and %v", lhs.t, rhs.t)
		return lhs
	}
	var shape ir.Shape = ir.Shape{}
	used := func(n int, lists ...[]int) []bool {
		u := make([]bool, n)
		for _, l := range lists {
			for _, d := range l {
				if d < 0 || d >= n || u[d] {
					f.fail("dot_general of %v and %v: bad dimension lists", lhs.t, rhs.t)
					return u
				}
				u[d] = true
			}
		}
		return u
	}
	lu, ru := used(lhs.rank(), lb, lc), used(rhs.rank(), rb, rc)
	for i := range lb {
		if lhs.shape()[lb[i]] != rhs.shape()[rb[i]] {
			f.fail("dot_general of %v and %v: batch dimensions differ", lhs.t, rhs.t)
		}
		shape = append(shape, lhs.shape()[lb[i]])
	}
	for i := range lc {
		if lhs.shape()[lc[i]] != rhs.shape()[rc[i]] {
			f.fail("dot_general of %v and %v: contracting dimensions differ", lhs.t, rhs.t)
		}
	}
	for d, n := range lhs.shape() {
		if !lu[d] {
			shape = append(shape, n)
		}
	}
	for d, n := range rhs.shape() {
		if !ru[d] {
			shape = append(shape, n)
		}
	}
	attrs := "dot_dimension_numbers = #stablehlo.dot<" + dimFields("lhs_batching_dimensions", lb, "rhs_batching_dimensions", rb,
		"lhs_contracting_dimensions", lc, "rhs_contracting_dimensions", rc) + ">, precision_config = [#stablehlo<precision HIGHEST>, #stablehlo<precision HIGHEST>]"
	return f.op1("stablehlo.dot_general", []value{lhs, rhs}, attrs, ir.Type{DType: lhs.dtype(), Shape: shape})
}

// dimFields renders "name = [dims]" pairs of a dimension-numbers
// attribute, leaving out empty lists as MLIR's printer does.
func dimFields(pairs ...any) string {
	var parts []string
	for i := 0; i < len(pairs); i += 2 {
		switch v := pairs[i+1].(type) {
		case []int:
			if len(v) > 0 {
				parts = append(parts, pairs[i].(string)+" = ["+intList(v)+"]")
			}
		case int:
			parts = append(parts, fmt.Sprintf("%s = %d", pairs[i].(string), v))
		}
	}
	return strings.Join(parts, ", ")
}

// ---------------------------------------------------------------- control flow

// ifOp emits stablehlo.if: both branches yield values of the types in
// results (values of the enclosing function are visible in them).
func (f *fn) ifOp(pred value, results []ir.Type, then, otherwise func(r *fn) []value) []value {
	if pred.dtype() != ir.Bool || pred.rank() != 0 {
		f.fail("if on %v, want a bool scalar", pred.t)
	}
	check := func(build func(r *fn) []value) func(r *fn, _ []value) []value {
		return func(r *fn, _ []value) []value {
			vs := build(r)
			if len(vs) != len(results) {
				f.fail("if branch yields %d values, want %d", len(vs), len(results))
				return vs
			}
			for i, v := range vs {
				if v.dtype() != results[i].DType || !sameShape(v.shape(), results[i].Shape) {
					f.fail("if branch yields %v, want %v", v.t, results[i])
				}
			}
			return vs
		}
	}
	a := f.region(nil, check(then))
	b := f.region(nil, check(otherwise))
	return f.op("stablehlo.if", []value{pred}, "", []string{a, b}, results...)
}
