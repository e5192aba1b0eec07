package tpu

// A reference evaluator for the StableHLO this package emits, so that the
// lowering's semantics are tested on machines without a PJRT plugin. It
// parses the generic op syntax the emitter writes (not MLIR in general)
// and evaluates every op the lowering uses, element by element in
// float64 with results rounded to their dtype. Independent of XLA, it
// checks the lowering's meaning (index maps, broadcasts, reductions, the
// DST search) against ir.Interpret and host references; numerics where
// XLA may differ (fused multiply-adds, reduction order) are within the
// tests' tolerances.

import (
	"encoding/hex"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/dstune/dstune/ir"
)

// hv is an evaluated value: every element as a float64 (exact for the
// integers the programs use, below 2⁵³), rounded to the dtype.
type hv struct {
	t ir.Type
	v []float64
}

type hop struct {
	results []string // "%7" or, for multi-result ops, "%7#0", "%7#1", ...
	name    string
	args    []string
	regions []*hregion
	attrs   string
	types   []ir.Type // result types
}

type hregion struct {
	params []string
	ptypes []ir.Type
	ops    []*hop
}

type hparser struct {
	s string
	p int
}

func (ps *hparser) fail(format string, args ...any) {
	end := min(ps.p+80, len(ps.s))
	panic(fmt.Sprintf("hloeval: at %d (%q): %s", ps.p, ps.s[ps.p:end], fmt.Sprintf(format, args...)))
}

func (ps *hparser) ws() {
	for ps.p < len(ps.s) && strings.ContainsRune(" \n\t", rune(ps.s[ps.p])) {
		ps.p++
	}
}

func (ps *hparser) lit(x string) {
	ps.ws()
	if !strings.HasPrefix(ps.s[ps.p:], x) {
		ps.fail("want %q", x)
	}
	ps.p += len(x)
}

func (ps *hparser) peek(x string) bool {
	ps.ws()
	return strings.HasPrefix(ps.s[ps.p:], x)
}

func (ps *hparser) name() string {
	ps.ws()
	start := ps.p
	for ps.p < len(ps.s) && (ps.s[ps.p] == '%' || ps.s[ps.p] == '#' || ps.s[ps.p] == '_' || ps.s[ps.p] >= '0' && ps.s[ps.p] <= '9' || ps.s[ps.p] >= 'a' && ps.s[ps.p] <= 'z') {
		ps.p++
	}
	return ps.s[start:ps.p]
}

var elemTypes = map[string]ir.DType{"f32": ir.Float32, "f64": ir.Float64, "f16": ir.Float16, "bf16": ir.BFloat16,
	"i8": ir.Int8, "i16": ir.Int16, "i32": ir.Int32, "i64": ir.Int64, "ui8": ir.Uint8, "ui16": ir.Uint16,
	"ui32": ir.Uint32, "ui64": ir.Uint64, "i1": ir.Bool}

func parseType(s string) ir.Type {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "tensor<"), ">")
	parts := strings.Split(s, "x")
	t := ir.Type{Shape: ir.Shape{}}
	for _, d := range parts[:len(parts)-1] {
		n, err := strconv.Atoi(d)
		if err != nil {
			panic("hloeval: bad type " + s)
		}
		t.Shape = append(t.Shape, n)
	}
	dt, ok := elemTypes[parts[len(parts)-1]]
	if !ok {
		panic("hloeval: bad element type " + s)
	}
	t.DType = dt
	return t
}

func (ps *hparser) typ() ir.Type {
	ps.ws()
	end := strings.IndexByte(ps.s[ps.p:], '>')
	t := parseType(ps.s[ps.p : ps.p+end+1])
	ps.p += end + 1
	return t
}

// balanced returns the text up to the brace that closes the one just
// consumed, skipping quoted strings.
func (ps *hparser) balanced(open, close byte) string {
	depth := 1
	start := ps.p
	for ; ps.p < len(ps.s); ps.p++ {
		switch c := ps.s[ps.p]; {
		case c == '"':
			ps.p++
			for ps.s[ps.p] != '"' {
				ps.p++
			}
		case c == open:
			depth++
		case c == close:
			depth--
			if depth == 0 {
				ps.p++
				return ps.s[start : ps.p-1]
			}
		}
	}
	ps.fail("unbalanced %c", open)
	return ""
}

func (ps *hparser) op() *hop {
	o := &hop{}
	if ps.peek("%") {
		base := ps.name()
		n := 1
		if ps.peek(":") {
			ps.lit(":")
			n, _ = strconv.Atoi(ps.name())
		}
		if n == 1 {
			o.results = []string{base}
		} else {
			for i := range n {
				o.results = append(o.results, base+"#"+strconv.Itoa(i))
			}
		}
		ps.lit("=")
	}
	ps.lit(`"`)
	end := strings.IndexByte(ps.s[ps.p:], '"')
	o.name = ps.s[ps.p : ps.p+end]
	ps.p += end + 1
	ps.lit("(")
	for !ps.peek(")") {
		o.args = append(o.args, ps.name())
		if ps.peek(",") {
			ps.lit(",")
		}
	}
	ps.lit(")")
	if ps.peek("({") {
		ps.lit("(")
		for {
			o.regions = append(o.regions, ps.region())
			if !ps.peek(",") {
				break
			}
			ps.lit(",")
		}
		ps.lit(")")
	}
	if ps.peek("{") {
		ps.lit("{")
		o.attrs = ps.balanced('{', '}')
	}
	ps.lit(":")
	ps.lit("(")
	ps.balanced('(', ')')
	ps.lit("->")
	if ps.peek("(") {
		ps.lit("(")
		for !ps.peek(")") {
			o.types = append(o.types, ps.typ())
			if ps.peek(",") {
				ps.lit(",")
			}
		}
		ps.lit(")")
	} else {
		o.types = []ir.Type{ps.typ()}
	}
	return o
}

func (ps *hparser) region() *hregion {
	ps.lit("{")
	r := &hregion{}
	if ps.peek("^bb0(") {
		ps.lit("^bb0(")
		for !ps.peek(")") {
			r.params = append(r.params, ps.name())
			ps.lit(":")
			r.ptypes = append(r.ptypes, ps.typ())
			if ps.peek(",") {
				ps.lit(",")
			}
		}
		ps.lit("):")
	}
	for !ps.peek("}") {
		r.ops = append(r.ops, ps.op())
	}
	ps.lit("}")
	return r
}

type hmodule struct {
	args []ir.Type
	body *hregion
}

var argRE = regexp.MustCompile(`%arg(\d+): (tensor<[^>]*>)`)

func parseModule(text string) *hmodule {
	start := strings.Index(text, "func.func public @main(")
	sigEnd := strings.Index(text[start:], ") -> (") + start
	m := &hmodule{}
	for _, a := range argRE.FindAllStringSubmatch(text[start:sigEnd], -1) {
		m.args = append(m.args, parseType(a[2]))
	}
	open := strings.Index(text[sigEnd:], "{\n") + sigEnd
	ps := &hparser{s: text, p: open}
	m.body = ps.region()
	return m
}

// ---------------------------------------------------------------- evaluation

type henv struct {
	vals   map[string]*hv
	parent *henv
}

func (e *henv) get(name string) *hv {
	for x := e; x != nil; x = x.parent {
		if v, ok := x.vals[name]; ok {
			return v
		}
	}
	panic("hloeval: undefined value " + name)
}

// evalModule runs a parsed module's main function.
func evalModule(m *hmodule, args []*ir.Tensor) []*ir.Tensor {
	env := &henv{vals: map[string]*hv{}}
	for i, t := range args {
		if t.DType() != m.args[i].DType || !t.Shape().Equal(m.args[i].Shape) {
			panic(fmt.Sprintf("hloeval: argument %d is %s%v, want %v", i, t.DType(), t.Shape(), m.args[i]))
		}
		env.vals["%arg"+strconv.Itoa(i)] = fromTensor(t)
	}
	outs := evalRegion(m.body, env, nil)
	res := make([]*ir.Tensor, len(outs))
	for i, o := range outs {
		res[i] = toTensor(o)
	}
	return res
}

func fromTensor(t *ir.Tensor) *hv {
	v := &hv{t: ir.Type{DType: t.DType(), Shape: t.Shape().Clone()}, v: make([]float64, t.Len())}
	switch {
	case t.DType() == ir.Bool:
		for i, b := range t.Bools() {
			if b {
				v.v[i] = 1
			}
		}
	case t.DType() == ir.Uint64:
		for i, x := range t.Uint64s() {
			v.v[i] = float64(x)
		}
	case t.DType().IsInt():
		for i := range v.v {
			v.v[i] = float64(t.Int64At(i))
		}
	default:
		for i := range v.v {
			v.v[i] = t.Float64At(i)
		}
	}
	return v
}

func toTensor(v *hv) *ir.Tensor {
	switch v.t.DType {
	case ir.Bool:
		b := make([]bool, len(v.v))
		for i, x := range v.v {
			b[i] = x != 0
		}
		return ir.FromBools(v.t.Shape, b)
	case ir.Float64:
		return ir.FromFloat64s(v.t.Shape, v.v)
	}
	if v.t.DType.IsInt() {
		x := make([]int64, len(v.v))
		for i, f := range v.v {
			x[i] = int64(f)
		}
		return ir.Convert(ir.FromInt64s(v.t.Shape, x), v.t.DType)
	}
	return ir.Convert(ir.FromFloat64s(v.t.Shape, v.v), v.t.DType)
}

// round brings x to what dtype d holds.
func round(d ir.DType, x float64) float64 {
	switch d {
	case ir.Float32:
		return float64(float32(x))
	case ir.Float64:
		return x
	case ir.Float16, ir.BFloat16:
		return ir.Convert(ir.FromFloat64s(ir.Shape{}, []float64{x}), d).Float64At(0)
	case ir.Bool:
		if x != 0 {
			return 1
		}
		return 0
	}
	if math.IsNaN(x) {
		return 0
	}
	x = math.Trunc(x)
	var bitsOf uint
	switch d {
	case ir.Int8, ir.Uint8:
		bitsOf = 8
	case ir.Int16, ir.Uint16:
		bitsOf = 16
	case ir.Int32, ir.Uint32:
		if d == ir.Int32 && x >= math.MinInt32 && x <= math.MaxInt32 || d == ir.Uint32 && x >= 0 && x <= math.MaxUint32 {
			return x // in range: the common case
		}
		bitsOf = 32
	default:
		return x
	}
	span := math.Ldexp(1, int(bitsOf))
	x = math.Mod(x, span)
	if x < 0 {
		x += span
	}
	if d.IsSigned() && x >= span/2 {
		x -= span
	}
	return x
}

func newHV(t ir.Type) *hv {
	return &hv{t: ir.Type{DType: t.DType, Shape: t.Shape.Clone()}, v: make([]float64, t.Shape.Size())}
}

// index helpers
func unravel(i int, shape ir.Shape, idx []int) {
	for d := len(shape) - 1; d >= 0; d-- {
		if shape[d] > 0 {
			idx[d] = i % shape[d]
			i /= shape[d]
		}
	}
}

func ravel(idx []int, shape ir.Shape) int {
	off := 0
	for d := range shape {
		off = off*shape[d] + idx[d]
	}
	return off
}

var (
	i64ArrayRE = regexp.MustCompile(`array<i64(?:: ([-0-9, ]*))?>`)
)

func attrInts(attrs, key string) []int {
	i := strings.Index(attrs, key+" = ")
	if i < 0 {
		panic("hloeval: no attribute " + key + " in " + attrs)
	}
	rest := attrs[i+len(key)+3:]
	if strings.HasPrefix(rest, "array<") {
		m := i64ArrayRE.FindStringSubmatch(rest)
		return parseInts(m[1])
	}
	if strings.HasPrefix(rest, "[") {
		return parseInts(rest[1:strings.IndexByte(rest, ']')])
	}
	end := strings.IndexAny(rest, " ,>")
	if end < 0 {
		end = len(rest)
	}
	return parseInts(rest[:end])
}

func parseInts(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			panic("hloeval: bad integer " + f)
		}
		out = append(out, n)
	}
	return out
}

func attrWord(attrs, key string) string {
	re := regexp.MustCompile(key + ` (\w+)>`)
	m := re.FindStringSubmatch(attrs)
	if m == nil {
		panic("hloeval: no " + key + " in " + attrs)
	}
	return m[1]
}

func evalRegion(r *hregion, parent *henv, params []*hv) []*hv {
	env := &henv{vals: map[string]*hv{}, parent: parent}
	for i, p := range r.params {
		env.vals[p] = params[i]
	}
	for _, o := range r.ops {
		if o.name == "stablehlo.return" || o.name == "func.return" {
			out := make([]*hv, len(o.args))
			for i, a := range o.args {
				out[i] = env.get(a)
			}
			return out
		}
		args := make([]*hv, len(o.args))
		for i, a := range o.args {
			args[i] = env.get(a)
		}
		res := evalOp(o, args, env)
		for i, name := range o.results {
			if res[i].t.DType != o.types[i].DType || !res[i].t.Shape.Equal(o.types[i].Shape) {
				panic(fmt.Sprintf("hloeval: %s computed %v, declared %v", o.name, res[i].t, o.types[i]))
			}
			env.vals[name] = res[i]
		}
	}
	panic("hloeval: region without return")
}

var unaryFns = map[string]func(float64) float64{
	"stablehlo.negate":                func(x float64) float64 { return -x },
	"stablehlo.abs":                   math.Abs,
	"stablehlo.sqrt":                  math.Sqrt,
	"stablehlo.rsqrt":                 func(x float64) float64 { return 1 / math.Sqrt(x) },
	"stablehlo.exponential":           math.Exp,
	"stablehlo.exponential_minus_one": math.Expm1,
	"stablehlo.log":                   math.Log,
	"stablehlo.log_plus_one":          math.Log1p,
	"stablehlo.tanh":                  math.Tanh,
	"stablehlo.logistic":              func(x float64) float64 { return 1 / (1 + math.Exp(-x)) },
	"stablehlo.floor":                 math.Floor,
	"stablehlo.ceil":                  math.Ceil,
	"chlo.erf":                        math.Erf,
	"stablehlo.sign": func(x float64) float64 {
		switch {
		case x > 0:
			return 1
		case x < 0:
			return -1
		}
		return x
	},
}

func binaryFn(name string, d ir.DType) func(a, b float64) float64 {
	u := func(f func(a, b uint64) uint64) func(a, b float64) float64 {
		return func(a, b float64) float64 {
			if d == ir.Bool || !d.IsSigned() {
				return float64(f(uint64(a), uint64(b)))
			}
			return float64(int64(f(uint64(int64(a)), uint64(int64(b)))))
		}
	}
	switch name {
	case "stablehlo.add":
		return func(a, b float64) float64 { return a + b }
	case "stablehlo.subtract":
		return func(a, b float64) float64 { return a - b }
	case "stablehlo.multiply":
		return func(a, b float64) float64 { return a * b }
	case "stablehlo.divide":
		if d.IsInt() {
			return func(a, b float64) float64 {
				if b == 0 {
					return -1
				}
				return math.Trunc(a / b)
			}
		}
		return func(a, b float64) float64 { return a / b }
	case "stablehlo.maximum":
		return func(a, b float64) float64 {
			if math.IsNaN(a) || math.IsNaN(b) {
				return math.NaN()
			}
			return math.Max(a, b)
		}
	case "stablehlo.minimum":
		return func(a, b float64) float64 {
			if math.IsNaN(a) || math.IsNaN(b) {
				return math.NaN()
			}
			return math.Min(a, b)
		}
	case "stablehlo.power":
		return math.Pow
	case "stablehlo.and":
		return u(func(a, b uint64) uint64 { return a & b })
	case "stablehlo.or":
		return u(func(a, b uint64) uint64 { return a | b })
	case "stablehlo.xor":
		return u(func(a, b uint64) uint64 { return a ^ b })
	}
	return nil
}

func evalOp(o *hop, a []*hv, env *henv) []*hv {
	one := func(v *hv) []*hv { return []*hv{v} }
	rt := o.types[0]
	if f, ok := unaryFns[o.name]; ok {
		out := newHV(rt)
		for i, x := range a[0].v {
			out.v[i] = round(rt.DType, f(x))
		}
		return one(out)
	}
	if f := binaryFn(o.name, rt.DType); f != nil && len(a) == 2 {
		out := newHV(rt)
		for i := range out.v {
			out.v[i] = round(rt.DType, f(a[0].v[i], a[1].v[i]))
		}
		return one(out)
	}
	switch o.name {
	case "stablehlo.not":
		out := newHV(rt)
		for i, x := range a[0].v {
			if rt.DType == ir.Bool {
				out.v[i] = 1 - x
			} else {
				out.v[i] = round(rt.DType, float64(^int64(x)))
			}
		}
		return one(out)
	case "stablehlo.constant":
		return one(evalConstant(o.attrs, rt))
	case "stablehlo.compare":
		dir := attrWord(o.attrs, "comparison_direction")
		out := newHV(rt)
		for i := range out.v {
			x, y := a[0].v[i], a[1].v[i]
			var r bool
			switch dir {
			case "EQ":
				r = x == y
			case "NE":
				r = x != y
			case "LT":
				r = x < y
			case "LE":
				r = x <= y
			case "GT":
				r = x > y
			case "GE":
				r = x >= y
			}
			if r {
				out.v[i] = 1
			}
		}
		return one(out)
	case "stablehlo.select":
		out := newHV(rt)
		for i := range out.v {
			p := a[0].v[0]
			if len(a[0].v) > 1 {
				p = a[0].v[i]
			}
			if p != 0 {
				out.v[i] = a[1].v[i]
			} else {
				out.v[i] = a[2].v[i]
			}
		}
		return one(out)
	case "stablehlo.convert":
		out := newHV(rt)
		for i, x := range a[0].v {
			if rt.DType.IsInt() && !a[0].t.DType.IsInt() && a[0].t.DType != ir.Bool {
				x = math.Trunc(x)
			}
			out.v[i] = round(rt.DType, x)
		}
		return one(out)
	case "stablehlo.bitcast_convert":
		out := newHV(rt)
		for i, x := range a[0].v {
			switch {
			case a[0].t.DType == ir.Float32 && rt.DType == ir.Uint32:
				out.v[i] = float64(math.Float32bits(float32(x)))
			case a[0].t.DType == ir.Uint32 && rt.DType == ir.Float32:
				out.v[i] = float64(math.Float32frombits(uint32(x)))
			default:
				panic("hloeval: bitcast " + a[0].t.DType.String() + " to " + rt.DType.String())
			}
		}
		return one(out)
	case "stablehlo.reshape":
		return one(&hv{t: rt, v: a[0].v})
	case "stablehlo.broadcast_in_dim":
		dims := attrInts(o.attrs, "broadcast_dimensions")
		out := newHV(rt)
		idx, src := make([]int, rt.Shape.Rank()), make([]int, a[0].t.Shape.Rank())
		for i := range out.v {
			unravel(i, rt.Shape, idx)
			for k, d := range dims {
				if a[0].t.Shape[k] == 1 {
					src[k] = 0
				} else {
					src[k] = idx[d]
				}
			}
			out.v[i] = a[0].v[ravel(src, a[0].t.Shape)]
		}
		return one(out)
	case "stablehlo.transpose":
		perm := attrInts(o.attrs, "permutation")
		out := newHV(rt)
		idx, src := make([]int, len(perm)), make([]int, len(perm))
		for i := range out.v {
			unravel(i, rt.Shape, idx)
			for k, p := range perm {
				src[p] = idx[k]
			}
			out.v[i] = a[0].v[ravel(src, a[0].t.Shape)]
		}
		return one(out)
	case "stablehlo.slice":
		start, stride := attrInts(o.attrs, "start_indices"), attrInts(o.attrs, "strides")
		out := newHV(rt)
		idx := make([]int, rt.Shape.Rank())
		for i := range out.v {
			unravel(i, rt.Shape, idx)
			for d := range idx {
				idx[d] = start[d] + idx[d]*stride[d]
			}
			out.v[i] = a[0].v[ravel(idx, a[0].t.Shape)]
		}
		return one(out)
	case "stablehlo.dynamic_slice":
		sizes := attrInts(o.attrs, "slice_sizes")
		out := newHV(rt)
		idx := make([]int, rt.Shape.Rank())
		starts := make([]int, len(sizes))
		for d := range sizes {
			starts[d] = min(max(int(a[1+d].v[0]), 0), a[0].t.Shape[d]-sizes[d])
		}
		for i := range out.v {
			unravel(i, rt.Shape, idx)
			for d := range idx {
				idx[d] += starts[d]
			}
			out.v[i] = a[0].v[ravel(idx, a[0].t.Shape)]
		}
		return one(out)
	case "stablehlo.concatenate":
		axis := attrInts(o.attrs, "dimension")[0]
		out := newHV(rt)
		idx := make([]int, rt.Shape.Rank())
		for i := range out.v {
			unravel(i, rt.Shape, idx)
			k := idx[axis]
			for _, x := range a {
				if k < x.t.Shape[axis] {
					idx[axis] = k
					out.v[i] = x.v[ravel(idx, x.t.Shape)]
					break
				}
				k -= x.t.Shape[axis]
			}
		}
		return one(out)
	case "stablehlo.reverse":
		axes := attrInts(o.attrs, "dimensions")
		out := newHV(rt)
		idx := make([]int, rt.Shape.Rank())
		for i := range out.v {
			unravel(i, rt.Shape, idx)
			for _, d := range axes {
				idx[d] = rt.Shape[d] - 1 - idx[d]
			}
			out.v[i] = a[0].v[ravel(idx, rt.Shape)]
		}
		return one(out)
	case "stablehlo.pad":
		lo, interior := attrInts(o.attrs, "edge_padding_low"), attrInts(o.attrs, "interior_padding")
		out := newHV(rt)
		for i := range out.v {
			out.v[i] = a[1].v[0]
		}
		idx := make([]int, a[0].t.Shape.Rank())
		for i, x := range a[0].v {
			unravel(i, a[0].t.Shape, idx)
			ok := true
			for d := range idx {
				idx[d] = lo[d] + idx[d]*(interior[d]+1)
				ok = ok && idx[d] >= 0 && idx[d] < rt.Shape[d]
			}
			if ok {
				out.v[ravel(idx, rt.Shape)] = x
			}
		}
		return one(out)
	case "stablehlo.iota":
		axis := attrInts(o.attrs, "iota_dimension")[0]
		out := newHV(rt)
		idx := make([]int, rt.Shape.Rank())
		for i := range out.v {
			unravel(i, rt.Shape, idx)
			out.v[i] = float64(idx[axis])
		}
		return one(out)
	case "stablehlo.reduce":
		return one(evalReduce(o, a[0], a[1], env))
	case "stablehlo.dot_general":
		return one(evalDot(o, a[0], a[1]))
	case "stablehlo.gather":
		return one(evalGather(o, a[0], a[1]))
	case "stablehlo.scatter":
		return one(evalScatter(o, a[0], a[1], a[2], env))
	case "stablehlo.if":
		branch := o.regions[1]
		if a[0].v[0] != 0 {
			branch = o.regions[0]
		}
		return evalRegion(branch, env, nil)
	case "stablehlo.sort":
		return evalSort(o, a, env)
	case "stablehlo.reduce_window":
		return one(evalReduceWindow(o, a[0], a[1], env))
	case "stablehlo.convolution":
		return one(evalConv(o, a[0], a[1]))
	}
	panic("hloeval: op " + o.name + " is not implemented")
}

var denseRE = regexp.MustCompile(`^value = dense<(.*)> : tensor<`)

func evalConstant(attrs string, t ir.Type) *hv {
	m := denseRE.FindStringSubmatch(attrs)
	if m == nil {
		panic("hloeval: constant " + attrs)
	}
	lit := m[1]
	out := newHV(t)
	switch {
	case strings.HasPrefix(lit, `"0x`):
		raw, err := hex.DecodeString(strings.Trim(lit, `"`)[2:])
		if err != nil {
			panic(err)
		}
		es := t.DType.Size()
		full := ir.NewTensor(t.DType, t.Shape)
		data := full.Bytes()
		if len(raw) == es {
			for i := 0; i < len(data); i += es {
				copy(data[i:], raw)
			}
		} else {
			copy(data, raw)
		}
		return fromTensor(full)
	default:
		words := strings.FieldsFunc(lit, func(r rune) bool { return r == '[' || r == ']' || r == ',' || r == ' ' })
		for i := range out.v {
			w := words[0]
			if len(words) > 1 {
				w = words[i]
			}
			if w == "true" {
				out.v[i] = 1
			}
		}
	}
	return out
}

// bodyFn is a region's single binary op (reductions, scatter).
func bodyFn(r *hregion, d ir.DType) func(a, b float64) float64 {
	if len(r.ops) != 2 {
		panic("hloeval: reduction body is not one op")
	}
	return binaryFn(r.ops[0].name, d)
}

func evalReduce(o *hop, x, init *hv, env *henv) *hv {
	axes := attrInts(o.attrs, "dimensions")
	rt := o.types[0]
	f := bodyFn(o.regions[0], x.t.DType)
	out := newHV(rt)
	for i := range out.v {
		out.v[i] = init.v[0]
	}
	reduced := make([]bool, x.t.Shape.Rank())
	for _, d := range axes {
		reduced[d] = true
	}
	idx := make([]int, x.t.Shape.Rank())
	dst := make([]int, 0, rt.Shape.Rank())
	for i, v := range x.v {
		unravel(i, x.t.Shape, idx)
		dst = dst[:0]
		for d, k := range idx {
			if !reduced[d] {
				dst = append(dst, k)
			}
		}
		j := ravel(dst, rt.Shape)
		out.v[j] = round(rt.DType, f(out.v[j], v))
	}
	return out
}

// dims reads "name = [..]" from a dimension-numbers attribute (absent:
// empty) or "name = N".
func dims(attrs, name string) []int {
	re := regexp.MustCompile(`\b` + name + ` = (?:\[([0-9, ]*)\]|(\d+))`)
	m := re.FindStringSubmatch(attrs)
	if m == nil {
		return nil
	}
	if m[2] != "" {
		return parseInts(m[2])
	}
	return parseInts(m[1])
}

func evalDot(o *hop, l, r *hv) *hv {
	lb, rb := dims(o.attrs, "lhs_batching_dimensions"), dims(o.attrs, "rhs_batching_dimensions")
	lc, rc := dims(o.attrs, "lhs_contracting_dimensions"), dims(o.attrs, "rhs_contracting_dimensions")
	rt := o.types[0]
	free := func(rank int, used ...[]int) []int {
		u := map[int]bool{}
		for _, l := range used {
			for _, d := range l {
				u[d] = true
			}
		}
		var f []int
		for d := range rank {
			if !u[d] {
				f = append(f, d)
			}
		}
		return f
	}
	lf, rf := free(l.t.Shape.Rank(), lb, lc), free(r.t.Shape.Rank(), rb, rc)
	cshape := make(ir.Shape, len(lc))
	for i, d := range lc {
		cshape[i] = l.t.Shape[d]
	}
	out := newHV(rt)
	idx := make([]int, rt.Shape.Rank())
	li, ri, ci := make([]int, l.t.Shape.Rank()), make([]int, r.t.Shape.Rank()), make([]int, len(lc))
	for i := range out.v {
		unravel(i, rt.Shape, idx)
		k := 0
		for j := range lb {
			li[lb[j]], ri[rb[j]] = idx[k], idx[k]
			k++
		}
		for _, d := range lf {
			li[d] = idx[k]
			k++
		}
		for _, d := range rf {
			ri[d] = idx[k]
			k++
		}
		var s float64
		for c := range cshape.Size() {
			unravel(c, cshape, ci)
			for j := range lc {
				li[lc[j]], ri[rc[j]] = ci[j], ci[j]
			}
			s += l.v[ravel(li, l.t.Shape)] * r.v[ravel(ri, r.t.Shape)]
		}
		out.v[i] = round(rt.DType, s)
	}
	return out
}

func evalGather(o *hop, x, ind *hv) *hv {
	offset, collapsed, startMap := dims(o.attrs, "offset_dims"), dims(o.attrs, "collapsed_slice_dims"), dims(o.attrs, "start_index_map")
	ivd := dims(o.attrs, "index_vector_dim")[0]
	sizes := attrInts(o.attrs, "slice_sizes")
	rt := o.types[0]
	isOffset := map[int]bool{}
	for _, d := range offset {
		isOffset[d] = true
	}
	isCollapsed := map[int]bool{}
	for _, d := range collapsed {
		isCollapsed[d] = true
	}
	var windowDims []int // operand dims in order that appear as offset dims
	for d := range x.t.Shape.Rank() {
		if !isCollapsed[d] {
			windowDims = append(windowDims, d)
		}
	}
	ishape := ind.t.Shape
	// Indices with an implicit trailing vector dimension.
	if ivd == ishape.Rank() {
		ishape = append(ishape.Clone(), 1)
	}
	out := newHV(rt)
	idx := make([]int, rt.Shape.Rank())
	src := make([]int, x.t.Shape.Rank())
	iidx := make([]int, ishape.Rank())
	for i := range out.v {
		unravel(i, rt.Shape, idx)
		var batch, off []int
		for d, k := range idx {
			if isOffset[d] {
				off = append(off, k)
			} else {
				batch = append(batch, k)
			}
		}
		b := 0
		for d := range iidx {
			if d == ivd {
				continue
			}
			iidx[d] = batch[b]
			b++
		}
		for d := range src {
			src[d] = 0
		}
		for k, od := range startMap {
			iidx[ivd] = k
			s := int(ind.v[ravel(iidx, ishape)])
			src[od] = min(max(s, 0), x.t.Shape[od]-sizes[od])
		}
		for k, d := range windowDims {
			src[d] += off[k]
		}
		out.v[i] = x.v[ravel(src, x.t.Shape)]
	}
	return out
}

func evalScatter(o *hop, base, ind, upd *hv, env *henv) *hv {
	window, inserted, toOperand := dims(o.attrs, "update_window_dims"), dims(o.attrs, "inserted_window_dims"), dims(o.attrs, "scatter_dims_to_operand_dims")
	ivd := dims(o.attrs, "index_vector_dim")[0]
	f := bodyFn(o.regions[0], base.t.DType)
	out := &hv{t: base.t, v: append([]float64(nil), base.v...)}
	isWindow := map[int]bool{}
	for _, d := range window {
		isWindow[d] = true
	}
	isInserted := map[int]bool{}
	for _, d := range inserted {
		isInserted[d] = true
	}
	var windowOperandDims []int
	for d := range base.t.Shape.Rank() {
		if !isInserted[d] {
			windowOperandDims = append(windowOperandDims, d)
		}
	}
	ishape := ind.t.Shape
	if ivd == ishape.Rank() {
		ishape = append(ishape.Clone(), 1)
	}
	uidx := make([]int, upd.t.Shape.Rank())
	iidx := make([]int, ishape.Rank())
	dst := make([]int, base.t.Shape.Rank())
	for i, u := range upd.v {
		unravel(i, upd.t.Shape, uidx)
		var sc, w []int
		for d, k := range uidx {
			if isWindow[d] {
				w = append(w, k)
			} else {
				sc = append(sc, k)
			}
		}
		b := 0
		for d := range iidx {
			if d == ivd {
				continue
			}
			iidx[d] = sc[b]
			b++
		}
		for d := range dst {
			dst[d] = 0
		}
		for k, od := range toOperand {
			iidx[ivd] = k
			dst[od] = int(ind.v[ravel(iidx, ishape)])
		}
		inside := true
		for k, d := range windowOperandDims {
			dst[d] += w[k]
		}
		for d := range dst {
			inside = inside && dst[d] >= 0 && dst[d] < base.t.Shape[d]
		}
		if inside {
			j := ravel(dst, base.t.Shape)
			out.v[j] = round(base.t.DType, f(out.v[j], u))
		}
	}
	return out
}

// simpleComparator recognizes a sort comparator that is one GT or LT
// compare of the first operand's pair, so that sorting needs no region
// evaluation per comparison ("" otherwise).
func simpleComparator(r *hregion) string {
	if len(r.ops) != 2 || r.ops[0].name != "stablehlo.compare" || r.ops[1].name != "stablehlo.return" || len(r.params) < 2 {
		return ""
	}
	c := r.ops[0]
	if len(c.args) != 2 || c.args[0] != r.params[0] || c.args[1] != r.params[1] || len(r.ops[1].args) != 1 || r.ops[1].args[0] != c.results[0] {
		return ""
	}
	if dir := attrWord(c.attrs, "comparison_direction"); dir == "GT" || dir == "LT" {
		return dir
	}
	return ""
}

func evalSort(o *hop, a []*hv, env *henv) []*hv {
	axis := attrInts(o.attrs, "dimension")[0]
	dir := simpleComparator(o.regions[0])
	shape := a[0].t.Shape
	n := shape[axis]
	outs := make([]*hv, len(a))
	for i := range a {
		outs[i] = &hv{t: a[i].t, v: append([]float64(nil), a[i].v...)}
	}
	idx := make([]int, shape.Rank())
	st := shape.Strides()[axis]
	for i := range a[0].v {
		unravel(i, shape, idx)
		if idx[axis] != 0 {
			continue
		}
		perm := make([]int, n)
		for k := range perm {
			perm[k] = i + k*st
		}
		less := func(p, q int) bool {
			if dir != "" {
				x, y := a[0].v[p], a[0].v[q]
				if dir == "GT" {
					return x > y
				}
				return x < y
			}
			var params []*hv
			for _, x := range a {
				params = append(params, &hv{t: ir.Type{DType: x.t.DType, Shape: ir.Shape{}}, v: []float64{x.v[p]}}, &hv{t: ir.Type{DType: x.t.DType, Shape: ir.Shape{}}, v: []float64{x.v[q]}})
			}
			return evalRegion(o.regions[0], env, params)[0].v[0] != 0
		}
		sorted := append([]int(nil), perm...)
		sort.SliceStable(sorted, func(x, y int) bool { return less(sorted[x], sorted[y]) })
		for k := range perm {
			for j := range a {
				outs[j].v[perm[k]] = a[j].v[sorted[k]]
			}
		}
	}
	return outs
}

var padRowsRE = regexp.MustCompile(`padding = dense<\[(.*?)\]> : tensor`)

func padPairs(attrs string) [][2]int {
	m := padRowsRE.FindStringSubmatch(attrs)
	nums := parseInts(strings.NewReplacer("[", "", "]", "").Replace(m[1]))
	out := make([][2]int, len(nums)/2)
	for i := range out {
		out[i] = [2]int{nums[2*i], nums[2*i+1]}
	}
	return out
}

func evalReduceWindow(o *hop, x, init *hv, env *henv) *hv {
	win, strides, dil := attrInts(o.attrs, "window_dimensions"), attrInts(o.attrs, "window_strides"), attrInts(o.attrs, "window_dilations")
	pads := padPairs(o.attrs)
	rt := o.types[0]
	f := bodyFn(o.regions[0], x.t.DType)
	out := newHV(rt)
	idx := make([]int, rt.Shape.Rank())
	w := make([]int, len(win))
	src := make([]int, len(win))
	wshape := ir.Shape(win)
	for i := range out.v {
		unravel(i, rt.Shape, idx)
		acc := init.v[0]
		for k := range wshape.Size() {
			unravel(k, wshape, w)
			ok := true
			for d := range src {
				src[d] = idx[d]*strides[d] + w[d]*dil[d] - pads[d][0]
				ok = ok && src[d] >= 0 && src[d] < x.t.Shape[d]
			}
			v := init.v[0]
			if ok {
				v = x.v[ravel(src, x.t.Shape)]
			}
			acc = round(rt.DType, f(acc, v))
		}
		out.v[i] = acc
	}
	return out
}

// evalConv handles the [b, f, spatial]x[o, i, spatial] layout the
// lowering writes.
func evalConv(o *hop, x, w *hv) *hv {
	strides, dil := attrInts(o.attrs, "window_strides"), attrInts(o.attrs, "rhs_dilation")
	groups := attrInts(o.attrs, "feature_group_count")[0]
	pads := padPairs(o.attrs)
	rt := o.types[0]
	out := newHV(rt)
	k := x.t.Shape.Rank() - 2
	cin := w.t.Shape[1]
	mPer := rt.Shape[1] / groups
	idx := make([]int, rt.Shape.Rank())
	kshape := ir.Shape(w.t.Shape[2:])
	kidx := make([]int, k)
	xi := make([]int, k+2)
	wi := make([]int, k+2)
	for i := range out.v {
		unravel(i, rt.Shape, idx)
		g := idx[1] / mPer
		var s float64
		for c := range cin {
			for q := range kshape.Size() {
				unravel(q, kshape, kidx)
				ok := true
				xi[0], xi[1] = idx[0], g*cin+c
				wi[0], wi[1] = idx[1], c
				for d := range k {
					p := idx[2+d]*strides[d] + kidx[d]*dil[d] - pads[d][0]
					ok = ok && p >= 0 && p < x.t.Shape[2+d]
					xi[2+d], wi[2+d] = p, kidx[d]
				}
				if ok {
					s += x.v[ravel(xi, x.t.Shape)] * w.v[ravel(wi, w.t.Shape)]
				}
			}
		}
		out.v[i] = round(rt.DType, s)
	}
	return out
}

// runProgram evaluates a lowered program on host tensors.
func runProgram(p *Program, args []*ir.Tensor) (out []*ir.Tensor, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return evalModule(parseModule(p.Text), args), nil
}
