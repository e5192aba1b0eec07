package ir

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/onnx"
)

func trainingModel(op string, inputs []*onnx.ValueInfo, outputs []string, attrs ...*onnx.Attribute) *onnx.Model {
	var names []string
	for _, in := range inputs {
		names = append(names, in.Name)
	}
	n := node(op, names, outputs, attrs...)
	n.Domain = trainingDomain
	m := buildModel(17, inputs, nil, []*onnx.Node{n}, outputs...)
	m.OpsetImports = append(m.OpsetImports, onnx.OpsetID{Domain: trainingDomain, Version: 1})
	return m
}

func normalFloat64s(r *rand.Rand, n int) *Tensor {
	v := make([]float64, n)
	for i := range v {
		v[i] = r.NormFloat64()
	}
	return FromFloat64s(Shape{n}, v)
}

// optimizerCase runs an optimizer on two float64 tensors at steps T = 0
// and T = 3 and compares every output with ref, the update rule written
// in float64 Go, per tensor.
func optimizerCase(t *testing.T, op string, groups []string, attrs []*onnx.Attribute, ref func(r float64, step int64, in []float64) []float64) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{3, 2}
	var infos []*onnx.ValueInfo
	infos = append(infos, valueInfo("R", onnx.Double), valueInfo("T", onnx.Int64))
	feeds := map[string]*Tensor{}
	shapes := map[string]Shape{"R": {}, "T": {}}
	var outs []string
	for _, g := range groups {
		for i, n := range sizes {
			name := g + string(rune('1'+i))
			infos = append(infos, valueInfo(name, onnx.Double, n))
			feeds[name] = normalFloat64s(rng, n)
			if g == "H" {
				for j, v := range feeds[name].Float64s() {
					feeds[name].Float64s()[j] = v * v // accumulated squares are not negative
				}
			}
			shapes[name] = Shape{n}
		}
	}
	for _, g := range groups {
		if g == "G" {
			continue
		}
		for i := range sizes {
			outs = append(outs, g+string(rune('1'+i))+"_new")
		}
	}
	m := trainingModel(op, infos, outs, attrs...)
	for _, step := range []int64{0, 3} {
		feeds["R"], feeds["T"] = FromFloat64s(Shape{}, []float64{0.1}), ScalarInt64(step)
		res, _ := interpretComposite(t, m, Bindings{Shapes: shapes}, feeds)
		for i, n := range sizes {
			for e := range n {
				var in []float64
				for _, g := range groups {
					in = append(in, feeds[g+string(rune('1'+i))].Float64At(e))
				}
				want := ref(0.1, step, in)
				for k, w := range want {
					got := res[k*len(sizes)+i].Tensor.Float64At(e)
					if math.Abs(got-w) > 1e-12*(1+math.Abs(w)) {
						t.Errorf("%s T=%d tensor %d element %d output %d: %v, want %v", op, step, i, e, k, got, w)
					}
				}
			}
		}
	}
}

func TestAdam(t *testing.T) {
	alpha, beta, eps, norm, post := 0.9, 0.99, 1e-3, 0.01, 0.1
	optimizerCase(t, "Adam", []string{"X", "G", "V", "H"},
		[]*onnx.Attribute{floatAttr("alpha", float32(alpha)), floatAttr("beta", float32(beta)), floatAttr("epsilon", float32(eps)),
			floatAttr("norm_coefficient", float32(norm)), floatAttr("norm_coefficient_post", float32(post))},
		func(r float64, step int64, in []float64) []float64 {
			a, b, e, nc, np := float64(float32(alpha)), float64(float32(beta)), float64(float32(eps)), float64(float32(norm)), float64(float32(post))
			x, g, v, h := in[0], in[1], in[2], in[3]
			g += nc * x
			v = a*v + (1-a)*g
			h = b*h + (1-b)*g*g
			if step > 0 {
				r *= math.Sqrt(1-math.Pow(b, float64(step))) / (1 - math.Pow(a, float64(step)))
			}
			x = (1 - np) * (x - r*v/(math.Sqrt(h)+e))
			return []float64{x, v, h}
		})
}

func TestAdagrad(t *testing.T) {
	decay, eps, norm := 0.1, 1e-5, 0.01
	optimizerCase(t, "Adagrad", []string{"X", "G", "H"},
		[]*onnx.Attribute{floatAttr("decay_factor", float32(decay)), floatAttr("epsilon", float32(eps)), floatAttr("norm_coefficient", float32(norm))},
		func(r float64, step int64, in []float64) []float64 {
			d, e, nc := float64(float32(decay)), float64(float32(eps)), float64(float32(norm))
			x, g, h := in[0], in[1], in[2]
			r /= 1 + float64(step)*d
			g += nc * x
			h += g * g
			return []float64{x - r*g/(math.Sqrt(h)+e), h}
		})
}

func TestMomentum(t *testing.T) {
	for _, mode := range []string{"standard", "nesterov"} {
		alpha, beta, norm := 0.9, 0.5, 0.01
		optimizerCase(t, "Momentum", []string{"X", "G", "V"},
			[]*onnx.Attribute{floatAttr("alpha", float32(alpha)), floatAttr("beta", float32(beta)), floatAttr("norm_coefficient", float32(norm)), stringAttr("mode", mode)},
			func(r float64, step int64, in []float64) []float64 {
				a, b, nc := float64(float32(alpha)), float64(float32(beta)), float64(float32(norm))
				x, g, v := in[0], in[1], in[2]
				g += nc * x
				if step == 0 {
					b = 1
				}
				v = a*v + b*g
				if mode == "nesterov" {
					return []float64{x - r*(g+a*v), v}
				}
				return []float64{x - r*v, v}
			})
	}
}

// TestGradientFiniteDifferences: Gradient of y = Σ(a·b + a·a·c) with
// respect to a and b (c a third input) against central differences of
// the imported y, in float64.
func TestGradientFiniteDifferences(t *testing.T) {
	n := node("Gradient", []string{"a", "b"}, []string{"da", "db"}, stringsAttr("xs", "a", "b"), stringAttr("y", "y"))
	n.Domain = trainingDomain
	m := buildModel(17, []*onnx.ValueInfo{valueInfo("a", onnx.Double, 3), valueInfo("b", onnx.Double, 3), valueInfo("c", onnx.Double, 3)}, nil, []*onnx.Node{
		node("Mul", []string{"a", "b"}, []string{"ab"}),
		node("Mul", []string{"a", "a"}, []string{"aa"}),
		node("Mul", []string{"aa", "c"}, []string{"aac"}),
		node("Add", []string{"ab", "aac"}, []string{"s"}),
		node("ReduceSum", []string{"s"}, []string{"y"}, intAttr("keepdims", 0)),
		n,
	}, "y", "da", "db")
	m.OpsetImports = append(m.OpsetImports, onnx.OpsetID{Domain: trainingDomain, Version: 1})
	rng := rand.New(rand.NewPCG(3, 4))
	feeds := map[string]*Tensor{"a": normalFloat64s(rng, 3), "b": normalFloat64s(rng, 3), "c": normalFloat64s(rng, 3)}
	shapes := map[string]Shape{"a": {3}, "b": {3}, "c": {3}}
	res, _ := interpretComposite(t, m, Bindings{Shapes: shapes}, feeds)
	const h = 1e-6
	for k, x := range []string{"a", "b"} {
		for i := range 3 {
			y := func(delta float64) float64 {
				f := map[string]*Tensor{}
				for name, v := range feeds {
					f[name] = v.Clone()
				}
				f[x].Float64s()[i] += delta
				r, _ := interpretComposite(t, m, Bindings{Shapes: shapes}, f)
				return r[0].Tensor.Float64At(0)
			}
			fd := (y(h) - y(-h)) / (2 * h)
			if got := res[1+k].Tensor.Float64At(i); math.Abs(got-fd) > 1e-6*(1+math.Abs(fd)) {
				t.Errorf("d y / d %s[%d] = %v, finite differences %v", x, i, got, fd)
			}
		}
	}
}
