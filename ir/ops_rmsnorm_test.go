package ir

import (
	"math"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// TestRMSNormalization compares RMSNormalization over one and several
// trailing axes (scales of the normalized shape and broadcast ones) with a
// float64 loop, and checks the gradients of X and the scale by central
// differences.
func TestRMSNormalization(t *testing.T) {
	for _, c := range []struct {
		name  string
		x     Shape
		scale Shape
		axis  int
		eps   float32
	}{
		{"last-axis", Shape{2, 3, 5}, Shape{5}, -1, 1e-5},
		{"two-axes-broadcast-scale", Shape{2, 3, 4}, Shape{1, 4}, 1, 0.1},
		{"all-axes", Shape{3, 4}, Shape{3, 4}, 0, 1e-3},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newOpModel(t, 23, 5)
			m.add("RMSNormalization", []string{m.param("X", c.x, -2, 2), m.param("scale", c.scale, 0.5, 1.5)}, []string{"Y"},
				intAttr("axis", int64(c.axis)), floatAttr("epsilon", c.eps))
			m.outputs = []string{"Y"}
			g, res := m.run()
			x, scale := m.tensor("X"), m.tensor("scale")
			axis := c.axis
			if axis < 0 {
				axis += len(c.x)
			}
			n := c.x[axis:].Size()
			want := NewTensor(Float64, c.x)
			norm := c.x[axis:]
			idx := make([]int, len(norm))
			for r := range c.x[:axis].Size() {
				var ss float64
				for i := range n {
					v := x.Float64At(r*n + i)
					ss += v * v
				}
				inv := 1 / math.Sqrt(ss/float64(n)+float64(c.eps))
				for i := range n {
					unflatten(i, norm, idx)
					want.Float64s()[r*n+i] = x.Float64At(r*n+i) * inv * at(scale, idx...)
				}
			}
			if d := Compare(res["Y"], want, 1e-12, 1e-12); !d.OK() {
				t.Errorf("Y: %v", d)
			}
			checkGradFD(t, g, 1e-6)
		})
	}
}

// TestRMSNormalizationFloat16 computes the statistics of a float16 input
// in float32 (stash_type 1): the result is the float32 computation rounded
// once.
func TestRMSNormalizationFloat16(t *testing.T) {
	m := newOpModel(t, 23, 6)
	x32 := m.random(Shape{2, 8}, -300, 300)
	x16 := Convert(x32, Float16)
	m.init("X", x16)
	m.init("scale", Convert(FromFloat64s(Shape{8}, []float64{1, 2, 0.5, 1, 1, 1, 3, 1}), Float16))
	m.add("RMSNormalization", []string{"X", "scale"}, []string{"Y"})
	m.outputs = []string{"Y"}
	_, res := m.run()
	for r := range 2 {
		var ss float64
		for i := range 8 {
			v := x16.Float64At(r*8 + i)
			ss += v * v
		}
		for i := range 8 {
			want := x16.Float64At(r*8+i) / math.Sqrt(ss/8+1e-5) * []float64{1, 2, 0.5, 1, 1, 1, 3, 1}[i]
			if got := res["Y"].Float64At(r*8 + i); math.Abs(got-want) > 2e-3*math.Abs(want)+1e-3 {
				t.Errorf("Y[%d,%d] = %g, want %g (squares of up to 300 overflow float16: the mean must be float32)", r, i, got, want)
			}
		}
	}
}

func TestRMSNormalizationImportErrors(t *testing.T) {
	rms := func(x, scale Shape, attrs ...*onnx.Attribute) func(m *opModel) {
		return func(m *opModel) {
			m.add("RMSNormalization", []string{m.param("X", x, 0, 1), m.param("S", scale, 0, 1)}, []string{"Y"}, attrs...)
			m.outputs = []string{"Y"}
		}
	}
	checkImportErrors(t, 23, []importError{
		{"scale-too-big", rms(Shape{2, 4}, Shape{8}), "Scale has shape [8], want one broadcastable to the normalized dimensions [4]"},
		{"scale-rank", rms(Shape{2, 4}, Shape{1, 4}), "want one broadcastable to the normalized dimensions [4]"},
		{"axis", rms(Shape{2, 4}, Shape{4}, intAttr("axis", 2)), "axis 2 out of range"},
		{"stash-type", rms(Shape{2, 4}, Shape{4}, intAttr("stash_type", int64(onnx.Int64))), "stash_type 7, want a float type"},
		{"int-input", func(m *opModel) {
			m.add("RMSNormalization", []string{m.init("X", FromInt64s(Shape{2}, []int64{1, 2})), m.param("S", Shape{2}, 0, 1)}, []string{"Y"})
			m.outputs = []string{"Y"}
		}, "X is int64, want a float type"},
	})
}
