package ir

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// padSourceByBouncing is an independent statement of Pad's index rule:
// the position read for output position o of an axis of length n, found
// by walking (bouncing off the ends for reflect, stepping by the period
// for wrap) instead of Pad's modular arithmetic; -1 is the fill.
func padSourceByBouncing(mode PadMode, n, begin, end, o int) int {
	first, kept := 0, n
	if begin < 0 {
		first, kept = -begin, kept+begin
	}
	if end < 0 {
		kept += end
	}
	p := o - max(begin, 0)
	if p >= 0 && p < kept {
		return first + p
	}
	switch mode {
	case PadConstant:
		return -1
	case PadEdge:
		p = max(0, min(p, kept-1))
	case PadWrap:
		for p < 0 {
			p += kept
		}
		for p >= kept {
			p -= kept
		}
	case PadReflect:
		for kept > 1 && (p < 0 || p >= kept) {
			if p < 0 {
				p = -p
			} else {
				p = 2*(kept-1) - p
			}
		}
		if kept == 1 {
			p = 0
		}
	}
	return first + p
}

// padByBouncing pads x (read through Float64At) element by element.
func padByBouncing(x *Tensor, mode PadMode, pads []int, fill float64) []float64 {
	r := len(x.shape)
	out := make(Shape, r)
	for d, n := range x.shape {
		out[d] = n + pads[d] + pads[r+d]
	}
	xs := x.shape.Strides()
	res := make([]float64, out.Size())
	pos := make([]int, r)
	for i := range res {
		unflatten(i, out, pos)
		src := 0
		for d, o := range pos {
			s := padSourceByBouncing(mode, x.shape[d], pads[d], pads[r+d], o)
			if s < 0 {
				src = -1
				break
			}
			src += s * xs[d]
		}
		if src < 0 {
			res[i] = fill
		} else {
			res[i] = x.Float64At(src)
		}
	}
	return res
}

// randomPads draws pads for shape that mode accepts: crops never empty an
// axis, and reflect pads reach up to three times past the kept length.
func randomPads(rng *rand.Rand, shape Shape) []int {
	r := len(shape)
	pads := make([]int, 2*r)
	for d, n := range shape {
		b, e := rng.IntN(3*n+1)-n/2, rng.IntN(3*n+1)-n/2
		for n+min(b, 0)+min(e, 0) < 1 {
			b, e = b+1, e+1
		}
		pads[d], pads[r+d] = b, e
	}
	return pads
}

func TestPadMatchesBouncingReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for iter := range 400 {
		r := 1 + iter%4
		shape := make(Shape, r)
		for d := range shape {
			shape[d] = 1 + rng.IntN(4)
		}
		mode := PadMode(iter % 4)
		pads := randomPads(rng, shape)
		x := NewTensor(Float64, shape)
		for i := range x.Float64s() {
			x.Float64s()[i] = float64(rng.IntN(100) - 50)
		}
		fill := 0.0
		in := []*Tensor{x}
		if mode == PadConstant && iter%8 == 0 {
			fill = 7
			in = append(in, FromFloat64s(Shape{}, []float64{fill}))
		}
		name := fmt.Sprintf("%s%v pads %v", mode, shape, pads)
		want := padByBouncing(x, mode, pads, fill)
		// Pad moves bytes: every element width must give the same result.
		for _, dt := range []DType{Float64, Float32, Int16, Int8, Float16} {
			xd := Convert(x, dt)
			ind := []*Tensor{xd}
			if len(in) > 1 {
				ind = append(ind, Convert(in[1], dt))
			}
			got, err := EvalOp(&Pad{Mode: mode, Pads: pads}, ind...)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for i, w := range want {
				if g := got[0].Float64At(i); g != w {
					t.Fatalf("%s as %s: element %d is %v, want %v", name, dt, i, g, w)
				}
			}
		}
	}
}

func TestPadBool(t *testing.T) {
	x := FromBools(Shape{2, 2}, []bool{true, false, false, true})
	got, err := EvalOp(&Pad{Mode: PadConstant, Pads: []int{0, 1, 1, 0}}, x, FromBools(Shape{}, []bool{true}))
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, true, false, true, false, true, true, true, true}
	if !got[0].Shape().Equal(Shape{3, 3}) || fmt.Sprint(got[0].Bools()) != fmt.Sprint(want) {
		t.Errorf("got %v %v, want [3,3] %v", got[0].Shape(), got[0].Bools(), want)
	}
}

// TestPadEmptyKept: a constant pad of an axis with nothing left to read
// (cropped away, or empty to begin with) is all fill.
func TestPadEmptyKept(t *testing.T) {
	fill := FromInt64s(Shape{}, []int64{9})
	for _, tc := range []struct {
		x    Shape
		pads []int
		want Shape
	}{
		{Shape{2, 3}, []int{0, -3, 0, 2}, Shape{2, 2}},
		{Shape{2, 0}, []int{1, 1, 0, 2}, Shape{3, 3}},
		{Shape{0, 2}, []int{1, 0, 1, 0}, Shape{2, 2}},
	} {
		got, err := EvalOp(&Pad{Pads: tc.pads}, NewTensor(Int64, tc.x), fill)
		if err != nil {
			t.Fatalf("%v pads %v: %v", tc.x, tc.pads, err)
		}
		if !got[0].Shape().Equal(tc.want) {
			t.Errorf("%v pads %v: shape %v, want %v", tc.x, tc.pads, got[0].Shape(), tc.want)
		}
		for _, v := range got[0].Int64s() {
			if v != 9 {
				t.Errorf("%v pads %v: %v, want all 9", tc.x, tc.pads, got[0].Int64s())
				break
			}
		}
	}
}

func TestPadInferErrors(t *testing.T) {
	f := Type{Float32, Shape{2, 3}}
	for _, tc := range []struct {
		op   *Pad
		in   []Type
		want string
	}{
		{&Pad{Pads: []int{1, 1}}, []Type{f}, "2 pads for rank 2, want 4"},
		{&Pad{Pads: []int{-2, 0, -1, 0}}, []Type{f}, "crop more than the axis length 2"},
		{&Pad{Mode: PadReflect, Pads: []int{-2, 0, 1, 0}}, []Type{f}, "reflect padding of an empty axis"},
		{&Pad{Pads: []int{1 << 40, 0, 0, 0}}, []Type{f}, "beyond any tensor's size"},
		{&Pad{Mode: PadEdge, Pads: []int{1, 0, 0, 0}}, []Type{f, {Float32, Shape{}}}, "a fill value for edge padding"},
		{&Pad{Pads: []int{1, 0, 0, 0}}, []Type{f, {Float64, Shape{}}}, "want a float32 scalar"},
		{&Pad{Mode: 9, Pads: []int{1, 0, 0, 0}}, []Type{f}, "unknown pad mode 9"},
	} {
		_, err := tc.op.Infer(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v on %v: got %v, want an error containing %q", tc.op.Name(), tc.op.Pads, tc.in, err, tc.want)
		}
	}
}

func TestPadGradFiniteDifferences(t *testing.T) {
	cases := []gradCase{}
	for _, mode := range []PadMode{PadConstant, PadReflect, PadEdge, PadWrap} {
		for _, pads := range [][]int{
			{1, 2, 2, 0},    // pads only
			{-1, 3, 1, -2},  // crops and pads
			{0, 7, 0, 6},    // wider than the axis: reads repeat
			{-1, -1, -1, 0}, // crops only
		} {
			cases = append(cases, gradCase{name: fmt.Sprintf("Pad/%s/%v", mode, pads), build: func(h *caseBuilder) []*Value {
				x := h.param(Shape{3, 4}, -1, 1)
				return []*Value{h.op(&Pad{Mode: mode, Pads: pads}, x)}
			}})
		}
	}
	cases = append(cases, gradCase{name: "Pad/constant/fill-value", build: func(h *caseBuilder) []*Value {
		x := h.param(Shape{2, 3}, -1, 1)
		v := h.param(Shape{}, -1, 1)
		return []*Value{h.op(&Pad{Mode: PadConstant, Pads: []int{1, -1, 0, 2}}, x, v)}
	}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runGradCase(t, c) })
	}
}

func TestPadMatchesOnnxruntime(t *testing.T) {
	x := NewTensor(Float32, Shape{2, 3, 4})
	for i := range x.Float32s() {
		x.Float32s()[i] = float32(i) - 7.5
	}
	xi := Convert(x, Int32)
	value := FromFloat32s(Shape{}, []float32{2.5})
	for _, tc := range []struct {
		name  string
		mode  string
		x     *Tensor
		pads  []int
		axes  []int
		value bool
	}{
		{"constant", "constant", x, []int{0, 1, 2, 1, 0, 3}, nil, true},
		{"constant/negative", "constant", x, []int{-1, 2, -1, 0, -1, 3}, nil, true},
		{"constant/axes", "constant", x, []int{2, -1, 1, 3}, []int{-1, 1}, false},
		{"reflect", "reflect", x, []int{1, 2, 3, 1, 1, 2}, nil, false},
		{"reflect/negative", "reflect", xi, []int{0, -1, 2, 0, 1, -1}, nil, false},
		{"edge", "edge", xi, []int{1, 2, 5, 1, 0, 4}, nil, false},
		{"edge/negative", "edge", x, []int{0, -1, 3, 0, 2, -2}, nil, false},
		{"wrap", "wrap", x, []int{1, 2, 3, 0, 1, 2}, nil, false},
		{"wrap/axes", "wrap", xi, []int{2, 3}, []int{2}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inputs := map[string]*Tensor{"x": tc.x, "pads": IntsTensor(tc.pads...)}
			names := []string{"x", "pads"}
			if tc.value {
				names = append(names, "value") // an initializer: onnxruntime's binding takes no scalars
			} else if tc.axes != nil {
				names = append(names, "")
			}
			if tc.axes != nil {
				inputs["axes"] = IntsTensor(tc.axes...)
				names = append(names, "axes")
			}
			var infos []*onnx.ValueInfo
			for _, n := range names {
				if inputs[n] != nil {
					infos = append(infos, declareInput(n, inputs[n]))
				}
			}
			m := buildModel(19, infos, nil, []*onnx.Node{node("Pad", names, []string{"y"}, stringAttr("mode", tc.mode))}, "y")
			if tc.value {
				m.Graph.Initializers = append(m.Graph.Initializers, initializer(t, "value", value))
			}
			checkAgainstORT(t, m, inputs, 0, 0)
		})
	}
}

// TestPadOpsets: opset 1 reads paddings, opsets 2 to 10 pads and value as
// attributes, later ones inputs.
func TestPadOpsets(t *testing.T) {
	x := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 1, 2)}
	in := map[string]*Tensor{"x": FromFloat32s(Shape{1, 2}, []float32{1, 2})}
	want := []float64{9, 1, 2, 9, 9}
	for _, m := range []*onnx.Model{
		buildModel(1, x, nil, []*onnx.Node{node("Pad", []string{"x"}, []string{"y"}, intsAttr("paddings", 0, 1, 0, 2), floatAttr("value", 9))}, "y"),
		buildModel(2, x, nil, []*onnx.Node{node("Pad", []string{"x"}, []string{"y"}, intsAttr("pads", 0, 1, 0, 2), floatAttr("value", 9))}, "y"),
		buildModel(11, x, []*onnx.Tensor{initializer(t, "p", IntsTensor(0, 1, 0, 2)), initializer(t, "v", FromFloat32s(Shape{1}, []float32{9}))},
			[]*onnx.Node{node("Pad", []string{"x", "p", "v"}, []string{"y"})}, "y"),
	} {
		g, err := FromONNX(m, nil)
		if err != nil {
			t.Fatalf("opset %d: %v", m.OpsetImports[0].Version, err)
		}
		out, err := Interpret(g, in)
		if err != nil {
			t.Fatal(err)
		}
		if got := values(out["y"]); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("opset %d: got %v, want %v", m.OpsetImports[0].Version, got, want)
		}
	}
}

func TestPadImportErrors(t *testing.T) {
	x := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3)}
	pads := func(v ...int) []*onnx.Tensor { return []*onnx.Tensor{initializer(t, "p", IntsTensor(v...))} }
	pad := func(opset int64, inits []*onnx.Tensor, in []string, attrs ...*onnx.Attribute) *onnx.Model {
		return buildModel(opset, x, inits, []*onnx.Node{node("Pad", in, []string{"y"}, attrs...)}, "y")
	}
	for _, tc := range []struct {
		name  string
		model *onnx.Model
		want  string
	}{
		{"bad mode", pad(18, pads(0, 0, 0, 0), []string{"x", "p"}, stringAttr("mode", "mirror")), `Pad mode "mirror", want constant, reflect, edge or wrap`},
		{"wrap before 19", pad(18, pads(0, 1, 0, 1), []string{"x", "p"}, stringAttr("mode", "wrap")), `Pad mode "wrap" needs opset 19`},
		{"pads length", pad(18, pads(1, 1, 1), []string{"x", "p"}), "3 pads for 2 axes, want 4"},
		{"pads missing", pad(10, nil, []string{"x"}), "attribute pads is required"},
		{"pads at run time", buildModel(18, append(x, valueInfo("p", onnx.Int64, 4)), nil, []*onnx.Node{node("Pad", []string{"x", "p"}, []string{"y"})}, "y"),
			`input 1 (pads, "p") must be known at import`},
		{"over-crop", pad(18, pads(-3, 0, 0, 0), []string{"x", "p"}), "crop more than the axis length 2"},
		{"huge pads", pad(18, pads(0, 1<<62, 0, 1<<62), []string{"x", "p"}), "beyond any tensor's size"},
		{"too big", pad(18, pads(1<<20, 1<<20, 0, 0), []string{"x", "p"}), "exceed the 16384 MiB limit"},
		{"repeated axis", pad(18, append(pads(1, 1, 1, 1), initializer(t, "a", IntsTensor(1, -1))), []string{"x", "p", "", "a"}), "axis 1 repeated"},
		{"axes before 18", pad(13, append(pads(1, 1), initializer(t, "a", IntsTensor(1))), []string{"x", "p", "", "a"}), "axes input needs opset 18"},
		{"value dtype", pad(18, append(pads(1, 1, 1, 1), initializer(t, "v", ScalarInt64(3))), []string{"x", "p", "v"}), "constant_value is int64[], want one float32"},
		{"center crop target", buildModel(18, x, []*onnx.Tensor{initializer(t, "s", IntsTensor(2, -1))}, []*onnx.Node{node("CenterCropPad", []string{"x", "s"}, []string{"y"})}, "y"),
			"target length -1 for axis 1"},
		{"center crop axes", buildModel(18, x, []*onnx.Tensor{initializer(t, "s", IntsTensor(2, 2))}, []*onnx.Node{node("CenterCropPad", []string{"x", "s"}, []string{"y"}, intsAttr("axes", 1))}, "y"),
			"shape has 2 elements for 1 axes"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantImportError(t, tc.model, nil, tc.want) })
	}
}
