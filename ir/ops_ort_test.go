package ir

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// The element-wise and reduction operators of ops_math.go and
// ops_reduce.go against onnxruntime, on the inputs the ONNX suite leaves
// out: ties, NaN and infinities, zero divisors and norms, negative
// operands, empty axes.

type ortCase struct {
	name   string
	opset  int64
	inputs []namedTensor
	node   *onnx.Node
	inits  []namedTensor // constant operands (axes), as initializers
}

// runAgainstORT compares the one-node model with onnxruntime (floats to
// 1e-6 relative, the rest exactly).
func runAgainstORT(t *testing.T, c ortCase) {
	t.Helper()
	infos, feeds := declareInputs(c.inputs)
	var inits []*onnx.Tensor
	for _, in := range c.inits {
		inits = append(inits, initializer(t, in.name, in.t))
	}
	checkAgainstORT(t, buildModel(c.opset, infos, inits, []*onnx.Node{c.node}, c.node.Outputs...), feeds, 1e-6, 0)
}

func f32s(shape Shape, v ...float32) *Tensor { return FromFloat32s(shape, v) }

func TestOpsAgainstOnnxruntime(t *testing.T) {
	ort.Need(t)
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	special := f32s(Shape{2, 6}, nan, inf, -inf, 0, -2.5, 2.5, 0.5, -0.5, 1.5, 3, -3, 7)
	ties := f32s(Shape{3, 4}, 1, 3, 3, 0, -1, -1, -1, -1, 2, nan, 5, nan)
	zeroRow := f32s(Shape{3, 3}, 0, 0, 0, 3, -4, 0, 1e-30, 2, -2)
	rng := rand.New(rand.NewPCG(11, 12))
	randn := func(shape Shape) *Tensor {
		x := NewTensor(Float32, shape)
		for i := range x.Float32s() {
			x.Float32s()[i] = float32(rng.NormFloat64() * 3)
		}
		return x
	}
	i32 := func(v ...int32) *Tensor { return FromInt32s(Shape{len(v)}, v) }
	i64 := func(v ...int64) *Tensor { return FromInt64s(Shape{len(v)}, v) }
	x := func(t *Tensor) []namedTensor { return []namedTensor{{"x", t}} }
	xy := func(a, b *Tensor) []namedTensor { return []namedTensor{{"x", a}, {"y", b}} }
	un := func(op string, attrs ...*onnx.Attribute) *onnx.Node {
		return node(op, []string{"x"}, []string{"z"}, attrs...)
	}
	bin := func(op string, attrs ...*onnx.Attribute) *onnx.Node {
		return node(op, []string{"x", "y"}, []string{"z"}, attrs...)
	}
	cases := []ortCase{
		{"Mod int32 signs", 13, xy(i32(-7, 7, -7, 7, 0, 5, -128, 13), i32(3, -3, -3, 3, 4, 5, 7, -1)), bin("Mod"), nil},
		{"Fmod int64 signs", 13, xy(i64(-7, 7, -7, 7, 0, 5), i64(3, -3, -3, 3, 4, 5)), bin("Mod", intAttr("fmod", 1)), nil},
		{"Fmod float broadcast", 13, xy(randn(Shape{3, 4}), f32s(Shape{4}, 1.5, -2, 0.7, -0.3)), bin("Mod", intAttr("fmod", 1)), nil},
		{"Round halves", 22, x(special), un("Round"), nil},
		{"IsNaN", 20, x(special), un("IsNaN"), nil},
		{"IsInf negative only", 20, x(special), un("IsInf", intAttr("detect_positive", 0)), nil},
		{"Softsign", 22, x(special), un("Softsign"), nil},
		{"HardSwish", 22, x(special), un("HardSwish"), nil},
		{"Mish", 22, x(randn(Shape{20})), un("Mish"), nil},
		{"Celu", 12, x(randn(Shape{20})), un("Celu", floatAttr("alpha", 0.7)), nil},
		{"ThresholdedRelu at alpha", 22, x(f32s(Shape{5}, 0.5, 1, 1.0000001, -2, 3)), un("ThresholdedRelu"), nil},
		{"Selu", 22, x(special), un("Selu"), nil},
		{"HardSigmoid", 22, x(special), un("HardSigmoid", floatAttr("alpha", 0.3), floatAttr("beta", 0.4)), nil},
		{"Shrink boundaries", 10, x(f32s(Shape{7}, -1, -1.0001, 1, 1.0001, 0, 5, -5)), un("Shrink", floatAttr("lambd", 1), floatAttr("bias", 0.25)), nil},
		{"PRelu broadcast", 16, xy(randn(Shape{2, 3, 4}), f32s(Shape{3, 1}, 0.1, -0.2, 0.3)), bin("PRelu"), nil},
		{"ArgMax ties and NaN", 13, x(ties), un("ArgMax", intAttr("axis", 1)), nil},
		{"ArgMax last index", 13, x(ties), un("ArgMax", intAttr("axis", 1), intAttr("select_last_index", 1), intAttr("keepdims", 0)), nil},
		{"ArgMin ties", 13, x(ties), un("ArgMin", intAttr("axis", 0), intAttr("select_last_index", 1)), nil},
		{"Hardmax ties", 13, x(f32s(Shape{2, 4}, 1, 3, 3, 0, -1, -1, -1, -1)), un("Hardmax"), nil},
		{"Hardmax opset 11 flattens", 11, x(randn(Shape{2, 3, 4})), un("Hardmax", intAttr("axis", 1)), nil},
		{"LpNormalization L2 zero row", 22, x(zeroRow), un("LpNormalization"), nil},
		{"LpNormalization L1 axis 0", 22, x(zeroRow), un("LpNormalization", intAttr("axis", 0), intAttr("p", 1)), nil},
		{"ReduceLogSumExp infinities", 18, x(f32s(Shape{3, 2}, -inf, -inf, inf, 1, 1000, 999)), node("ReduceLogSumExp", []string{"x", "a"}, []string{"z"}), nil},
		{"ReduceLogSumExp opset 13 attribute", 13, x(randn(Shape{2, 3, 4})), un("ReduceLogSumExp", intsAttr("axes", -1, 0), intAttr("keepdims", 0)), nil},
		{"ReduceL2 int32", 13, x(FromInt32s(Shape{2, 3}, []int32{3, 4, 12, -5, 1, 1})), un("ReduceL2", intsAttr("axes", 1), intAttr("keepdims", 0)), nil},
		{"ReduceSumSquare noop", 18, x(randn(Shape{2, 3})), un("ReduceSumSquare", intAttr("noop_with_empty_axes", 1)), nil},
		{"ReduceLogSum all", 18, x(f32s(Shape{2, 2}, 1, 2, 3, 4)), un("ReduceLogSum"), nil},
		{"CumProd reverse exclusive", 26, x(randn(Shape{3, 4})), node("CumProd", []string{"x", "a"}, []string{"z"}, intAttr("exclusive", 1), intAttr("reverse", 1)), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			switch c.node.OpType {
			case "ReduceLogSumExp":
				c.inits = []namedTensor{{"a", i64(1)}}
			case "CumProd":
				c.inits = []namedTensor{{"a", FromInt32s(Shape{}, []int32{-1})}}
			}
			runAgainstORT(t, c)
		})
	}
}
