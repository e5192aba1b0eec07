package ir

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// TestRandomDistributions: draws are reproducible, depend on the seed,
// stay in range and have the distribution's mean and variance.
func TestRandomDistributions(t *testing.T) {
	const n = 20000
	draw := func(op string, seed float32, attrs ...*onnx.Attribute) []float64 {
		attrs = append(attrs, intsAttr("shape", 100, n/100), floatAttr("seed", seed))
		res, g := runModel(t, buildModel(22, nil, nil, []*onnx.Node{node(op, nil, []string{"y"}, attrs...)}, "y"), nil)
		if len(g.Nodes) != 1 {
			t.Fatalf("%s: %d nodes, want the random op unfolded", op, len(g.Nodes))
		}
		return values(res["y"])
	}
	moments := func(v []float64) (mean, variance float64) {
		for _, x := range v {
			mean += x
		}
		mean /= float64(len(v))
		for _, x := range v {
			variance += (x - mean) * (x - mean)
		}
		return mean, variance / float64(len(v))
	}
	u := draw("RandomUniform", 3, floatAttr("low", -2), floatAttr("high", 6))
	if again := draw("RandomUniform", 3, floatAttr("low", -2), floatAttr("high", 6)); !equalFloats(u, again) {
		t.Error("RandomUniform with one seed gave different draws")
	}
	if other := draw("RandomUniform", 4, floatAttr("low", -2), floatAttr("high", 6)); equalFloats(u, other) {
		t.Error("RandomUniform with seeds 3 and 4 gave the same draws")
	}
	for _, x := range u {
		if x < -2 || x > 6 {
			t.Fatalf("RandomUniform draw %g outside [-2, 6]", x)
		}
	}
	// Uniform on [-2, 6): mean 2, variance 64/12; 5 standard errors.
	if m, v := moments(u); math.Abs(m-2) > 5*math.Sqrt(64.0/12/n) || math.Abs(v-64.0/12) > 0.05*64/12 {
		t.Errorf("RandomUniform mean %g variance %g, want 2 and %g", m, v, 64.0/12)
	}
	nv := draw("RandomNormal", 5, floatAttr("mean", 1), floatAttr("scale", 3), intAttr("dtype", int64(onnx.Double)))
	if m, v := moments(nv); math.Abs(m-1) > 5*3/math.Sqrt(n) || math.Abs(v-9) > 0.05*9 {
		t.Errorf("RandomNormal mean %g variance %g, want 1 and 9", m, v)
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRandomLikeAndUnseeded: the *Like forms take the input's shape and
// (by default) dtype; two unseeded nodes of one graph draw differently,
// and the same on every import.
func TestRandomLikeAndUnseeded(t *testing.T) {
	x := NewTensor(Float16, Shape{4, 50})
	m := buildModel(22, []*onnx.ValueInfo{valueInfo("x", onnx.Float16, 4, 50)}, nil, []*onnx.Node{
		node("RandomUniformLike", []string{"x"}, []string{"a"}),
		node("RandomUniformLike", []string{"x"}, []string{"b"}),
		node("RandomNormalLike", []string{"x"}, []string{"c"}, intAttr("dtype", int64(onnx.Float))),
	}, "a", "b", "c")
	res, _ := runModel(t, m, map[string]*Tensor{"x": x})
	again, _ := runModel(t, m, map[string]*Tensor{"x": x})
	if res["a"].DType() != Float16 || !res["a"].Shape().Equal(x.Shape()) || res["c"].DType() != Float32 {
		t.Errorf("outputs %v, %v for input %v", res["a"], res["c"], x)
	}
	if equalFloats(values(res["a"]), values(res["b"])) {
		t.Error("two unseeded RandomUniformLike nodes drew the same values")
	}
	if !equalFloats(values(res["a"]), values(again["a"])) {
		t.Error("an unseeded node drew differently on a second import")
	}
}

func TestBernoulli(t *testing.T) {
	const n = 10000
	p := NewTensor(Float32, Shape{n})
	for i := range n {
		p.Float32s()[i] = []float32{0, 1, 0.3, 0.8}[i%4]
	}
	for _, dt := range []onnx.DataType{onnx.Float, onnx.Int32, onnx.Bool} {
		m := buildModel(22, []*onnx.ValueInfo{valueInfo("p", onnx.Float, n)}, nil, []*onnx.Node{
			node("Bernoulli", []string{"p"}, []string{"y"}, intAttr("dtype", int64(dt)), floatAttr("seed", 1)),
		}, "y")
		res, _ := runModel(t, m, map[string]*Tensor{"p": p})
		y := res["y"]
		if y.DType().ONNX() != dt {
			t.Fatalf("dtype %s, want %v", y.DType(), dt)
		}
		ones := map[float32]int{}
		for i := range n {
			v := y.Float64At(i)
			pi := p.Float32s()[i]
			if v != 0 && v != 1 || (pi == 0 && v != 0) || (pi == 1 && v != 1) {
				t.Fatalf("p = %g drew %g", pi, v)
			}
			ones[pi] += int(v)
		}
		for _, pi := range []float32{0.3, 0.8} {
			k := float64(n / 4)
			if share := float64(ones[pi]) / k; math.Abs(share-float64(pi)) > 5*math.Sqrt(float64(pi)*(1-float64(pi))/k) {
				t.Errorf("p = %g: %g ones", pi, share)
			}
		}
	}
	// Sampling has no derivative: the probabilities get no gradient, and
	// differentiating through it is not an error.
	b := NewBuilder("bernoulli")
	q := b.Param("q", FromFloat64s(Shape{3}, []float64{0.2, 0.5, 0.9}))
	s := b.Op1(&Bernoulli{DType: Float64, Seed: 1}, q)
	b.Output("L", b.Op1(&Reduce{Fn: ReduceSum, Axes: []int{0}}, b.Op1(&Binary{Fn: Mul}, s, q)))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Grad(g, "L", nil); err != nil {
		t.Errorf("Grad through Bernoulli: %v", err)
	}
}

func TestEyeLikeAndOneHot(t *testing.T) {
	for _, k := range []int64{-5, -1, 0, 2, 9} {
		m := buildModel(22, []*onnx.ValueInfo{valueInfo("x", onnx.Int64, 3, 5)}, nil,
			[]*onnx.Node{node("EyeLike", []string{"x"}, []string{"y"}, intAttr("k", k), intAttr("dtype", int64(onnx.Float)))}, "y")
		res, _ := runModel(t, m, map[string]*Tensor{"x": NewTensor(Int64, Shape{3, 5})})
		for i := range 3 {
			for j := range 5 {
				want := 0.0
				if int64(j-i) == k {
					want = 1
				}
				if got := res["y"].Float64At(i*5 + j); got != want {
					t.Errorf("k=%d: y[%d][%d] = %g, want %g", k, i, j, got, want)
				}
			}
		}
	}
	// OneHot against a loop over every position, out-of-range and
	// negative indices included.
	rng := rand.New(rand.NewPCG(41, 42))
	idx := NewTensor(Int32, Shape{2, 3})
	for i := range idx.Int32s() {
		idx.Int32s()[i] = int32(rng.IntN(15) - 7)
	}
	const depth = 5
	vals := FromFloat32s(Shape{2}, []float32{-1, 4})
	for axis := -3; axis <= 2; axis++ {
		m := buildModel(11, []*onnx.ValueInfo{valueInfo("i", onnx.Int32, 2, 3), valueInfo("v", onnx.Float, 2)},
			[]*onnx.Tensor{initializer(t, "d", FromInt64s(Shape{1}, []int64{depth}))},
			[]*onnx.Node{node("OneHot", []string{"i", "d", "v"}, []string{"y"}, intAttr("axis", int64(axis)))}, "y")
		res, _ := runModel(t, m, map[string]*Tensor{"i": idx, "v": vals})
		y := res["y"]
		a := axis
		if a < 0 {
			a += 3
		}
		strides := y.Shape().Strides()
		for p := range y.Len() {
			pos := make([]int, 3)
			for d := range pos {
				pos[d] = p / strides[d] % y.Shape()[d]
			}
			d := pos[a]
			rest := append(append([]int{}, pos[:a]...), pos[a+1:]...)
			id := int(idx.Int32s()[rest[0]*3+rest[1]])
			if id < 0 {
				id += depth
			}
			want := float32(-1)
			if id == d {
				want = 4
			}
			if got := y.Float32s()[p]; got != want {
				t.Fatalf("axis %d: y%v = %g, want %g (index %d)", axis, pos, got, want, idx.Int32s()[rest[0]*3+rest[1]])
			}
		}
	}
}

// TestDet compares with the Leibniz formula over all permutations.
func TestDet(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	const m = 4
	x := NewTensor(Float64, Shape{3, m, m})
	for i := range x.Float64s() {
		x.Float64s()[i] = rng.NormFloat64()
	}
	// The third matrix is singular: row 2 = row 0 + row 1.
	s := x.Float64s()[2*m*m:]
	for j := range m {
		s[2*m+j] = s[j] + s[m+j]
	}
	out, err := EvalOp(&Det{}, x)
	if err != nil {
		t.Fatal(err)
	}
	for b := range 3 {
		a := x.Float64s()[b*m*m : (b+1)*m*m]
		want := 0.0
		perm := []int{0, 1, 2, 3}
		var permute func(k int, sign float64)
		permute = func(k int, sign float64) {
			if k == m {
				p := sign
				for i, j := range perm {
					p *= a[i*m+j]
				}
				want += p
				return
			}
			for i := k; i < m; i++ {
				perm[k], perm[i] = perm[i], perm[k]
				s := sign
				if i != k {
					s = -s
				}
				permute(k+1, s)
				perm[k], perm[i] = perm[i], perm[k]
			}
		}
		permute(0, 1)
		if got := out[0].Float64s()[b]; math.Abs(got-want) > 1e-12*(1+math.Abs(want)) {
			t.Errorf("det of matrix %d = %g, want %g", b, got, want)
		}
	}
}

func TestGenerateImportErrors(t *testing.T) {
	f := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3)}
	checkNodeImportErrors(t, []nodeImportError{
		{"RandomUniform without shape", 22, nil, nil, node("RandomUniform", nil, []string{"z"}), "needs the attribute shape"},
		{"RandomUniform negative dim", 22, nil, nil, node("RandomUniform", nil, []string{"z"}, intsAttr("shape", 2, -1)), "negative dimension"},
		{"RandomUniform huge", 22, nil, nil, node("RandomUniform", nil, []string{"z"}, intsAttr("shape", 1<<40, 1<<40)), "MiB limit"},
		{"RandomUniform low > high", 22, nil, nil, node("RandomUniform", nil, []string{"z"}, intsAttr("shape", 2), floatAttr("low", 2), floatAttr("high", 1)), "low 2 > high 1"},
		{"RandomNormal int dtype", 22, nil, nil, node("RandomNormal", nil, []string{"z"}, intsAttr("shape", 2), intAttr("dtype", int64(onnx.Int32))), "dtype int32, want a float type"},
		{"RandomNormalLike negative scale", 22, f, nil, node("RandomNormalLike", []string{"x"}, []string{"z"}, floatAttr("scale", -1)), "scale -1, want >= 0"},
		{"Bernoulli of ints", 22, []*onnx.ValueInfo{valueInfo("x", onnx.Int32, 2)}, nil, node("Bernoulli", []string{"x"}, []string{"z"}), "want a float type"},
		{"EyeLike rank 3", 22, []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 2, 2)}, nil, node("EyeLike", []string{"x"}, []string{"z"}), "want a 2-D input"},
		{"EyeLike to string", 22, f, nil, node("EyeLike", []string{"x"}, []string{"z"}, intAttr("dtype", int64(onnx.String))), "EyeLike to string, want a number type or bool"},
		{"OneHot runtime depth", 11, append(f, valueInfo("d", onnx.Int64, 1), valueInfo("v", onnx.Float, 2)), nil, node("OneHot", []string{"x", "d", "v"}, []string{"z"}), `input 1 (depth, "d") must be known at import`},
		{"OneHot zero depth", 11, append(f, valueInfo("v", onnx.Float, 2)), []*onnx.Tensor{initializer(t, "d", IntsTensor(0))}, node("OneHot", []string{"x", "d", "v"}, []string{"z"}), "depth 0, want a positive count"},
		{"OneHot three values", 11, append(f, valueInfo("v", onnx.Float, 3)), []*onnx.Tensor{initializer(t, "d", IntsTensor(4))}, node("OneHot", []string{"x", "d", "v"}, []string{"z"}), "want [2] (off, on)"},
		{"OneHot axis", 11, append(f, valueInfo("v", onnx.Float, 2)), []*onnx.Tensor{initializer(t, "d", IntsTensor(4))}, node("OneHot", []string{"x", "d", "v"}, []string{"z"}, intAttr("axis", 3)), "axis 3 out of range"},
		{"Det not square", 22, f, nil, node("Det", []string{"x"}, []string{"z"}), "want [..., M, M]"},
	})
}
