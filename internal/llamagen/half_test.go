package llamagen_test

import (
	"testing"

	"github.com/dstune/dstune/ir"
)

// TestFloat32Compute: a float16 and a bfloat16 decoder, imported to
// compute in float32 (ir.Model.Float32Compute), hold float32 master copies
// of exactly their half-precision weights, contain no half-precision value
// at all, and compute the logits of the float32 decoder drawn from the
// same seed within the half-precision rounding of its weights.
func TestFloat32Compute(t *testing.T) {
	const batch, seq = 2, 5
	tokens := []int64{1, 4, 9, 16, 25, 36, 49, 8, 3, 2}
	mask := []int64{1, 1, 1, 1, 1, 0, 0, 1, 1, 1}
	full, _ := load(t, small)
	want := runLM(t, full, tokens, mask, batch, seq)
	for _, dt := range []struct {
		name  string
		dtype ir.DType
		tol   float64
	}{{"float16", ir.Float16, 2e-3}, {"bfloat16", ir.BFloat16, 2e-2}} {
		c := small
		c.DType = dt.dtype.ONNX()
		c.KVCache = true
		half, _ := load(t, c)
		if half.Float32Compute() == half {
			t.Fatalf("%s: Float32Compute left the model as it is", dt.name)
		}
		up := half.Float32Compute()
		if len(up.HalfParams()) != len(half.Params) {
			t.Errorf("%s: %d parameters converted, the model has %d", dt.name, len(up.HalfParams()), len(half.Params))
		}
		for _, p := range up.Params {
			if p.Tensor.DType() != ir.Float32 || up.HalfParams()[p.Name] != dt.dtype {
				t.Errorf("%s: parameter %s is %s (stored as %s)", dt.name, p.Name, p.Tensor.DType(), up.HalfParams()[p.Name])
			}
		}
		b, _, err := up.LMBindings(batch, seq)
		if err != nil {
			t.Fatal(err)
		}
		g, err := up.Specialize(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range g.Nodes {
			for _, v := range append(append([]*ir.Value{}, n.Inputs...), n.Outputs...) {
				if v != nil && (v.DType == ir.Float16 || v.DType == ir.BFloat16) {
					t.Fatalf("%s: node %s holds %s value %s", dt.name, n.Op.Name(), v.DType, v.Name)
				}
			}
		}
		got := runLM(t, up, tokens, mask, batch, seq)
		if got.DType() != ir.Float32 {
			t.Fatalf("%s: logits are %s", dt.name, got.DType())
		}
		if d := ir.Compare(got, want, 0, dt.tol); !d.OK() {
			t.Errorf("%s: logits differ from the float32 decoder's beyond the weights' rounding: %v", dt.name, d)
		}
	}
}
