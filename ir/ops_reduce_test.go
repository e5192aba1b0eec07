package ir

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// TestComposedReduceGradients: the reductions built from element-wise
// ops and ReduceSum differentiate through their parts, ReduceLogSumExp
// through its max shift too.
func TestComposedReduceGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	positive := awayFromPoints(rng, Shape{2, 3, 4}, 0.2, 3, 0)
	signed := awayFromPoints(rng, Shape{2, 3, 4}, -3, 3, 1e-3, 0)
	axes := IntsTensor(0, -1)
	for _, tc := range []struct {
		op string
		x  *Tensor
	}{
		{"ReduceL1", signed},
		{"ReduceL2", signed},
		{"ReduceSumSquare", signed},
		{"ReduceLogSum", positive},
		{"ReduceLogSumExp", signed},
	} {
		for _, keep := range []int64{0, 1} {
			t.Run(fmt.Sprintf("%s/keepdims=%d", tc.op, keep), func(t *testing.T) {
				n := node(tc.op, []string{"x", "axes"}, []string{"y"}, intAttr("keepdims", keep))
				checkMathGrad(t, 18, n, map[string]*Tensor{"x": tc.x.Clone(), "axes": axes})
			})
		}
	}
	t.Run("LpNormalization/p=1", func(t *testing.T) {
		checkMathGrad(t, 22, node("LpNormalization", []string{"x"}, []string{"y"}, intAttr("p", 1), intAttr("axis", 1)), map[string]*Tensor{"x": signed.Clone()})
	})
	t.Run("LpNormalization/p=2", func(t *testing.T) {
		checkMathGrad(t, 22, node("LpNormalization", []string{"x"}, []string{"y"}), map[string]*Tensor{"x": signed.Clone()})
	})
	for _, op := range []string{"ReduceMax", "ReduceMin"} {
		t.Run(op, func(t *testing.T) {
			checkMathGrad(t, 18, node(op, []string{"x", "axes"}, []string{"y"}), map[string]*Tensor{"x": signed.Clone(), "axes": IntsTensor(1)})
		})
	}
}

// TestReduceExtremeTies: elements tied for the maximum share its
// gradient evenly; the others get none.
func TestReduceExtremeTies(t *testing.T) {
	b := NewBuilder("ties")
	x := b.Param("x", FromFloat64s(Shape{2, 3}, []float64{1, 4, 4, -2, -2, -2}))
	m := b.Op1(&Reduce{Fn: ReduceMax, Axes: []int{1}}, x)
	w := b.Const(FromFloat64s(Shape{2}, []float64{3, 6}))
	b.Output("s", b.Op1(&Reduce{Fn: ReduceSum, Axes: []int{0}}, b.Op1(&Binary{Fn: Mul}, m, w)))
	res := gradientsOf(t, b, "s")
	if got := fmt.Sprint(res["grad:x"].Float64s()); got != "[0 1.5 1.5 2 2 2]" {
		t.Errorf("grad:x = %s, want [0 1.5 1.5 2 2 2]", got)
	}
}

func TestReduceImportErrors(t *testing.T) {
	f := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 3)}
	empty := []*onnx.ValueInfo{valueInfo("x", onnx.Float, 2, 0)}
	b := []*onnx.ValueInfo{valueInfo("x", onnx.Bool, 2, 3)}
	ints := []*onnx.ValueInfo{valueInfo("x", onnx.Int32, 2, 3)}
	axes := func(v ...int) []*onnx.Tensor { return []*onnx.Tensor{initializer(t, "a", IntsTensor(v...))} }
	checkNodeImportErrors(t, []nodeImportError{
		{"axis out of range", 18, f, axes(2), node("ReduceL2", []string{"x", "a"}, []string{"z"}), "axis 2 out of range"},
		{"attribute axis out of range", 13, f, nil, node("ReduceLogSumExp", []string{"x"}, []string{"z"}, intsAttr("axes", -3)), "axis -3 out of range"},
		{"runtime axes", 18, append(f, valueInfo("a", onnx.Int64, 1)), nil, node("ReduceL1", []string{"x", "a"}, []string{"z"}), `input 1 (axes, "a") must be known at import`},
		{"bool input", 18, b, nil, node("ReduceSumSquare", []string{"x"}, []string{"z"}), "ReduceSumSquare of bool, want a number type"},
		{"ArgMax axis", 13, f, nil, node("ArgMax", []string{"x"}, []string{"z"}, intAttr("axis", 5)), "axis 5 out of range"},
		{"ArgMin of an empty axis", 13, empty, nil, node("ArgMin", []string{"x"}, []string{"z"}, intAttr("axis", 1)), "axis 1 of [2,0] is empty"},
		{"CumProd two axes", 26, f, axes(0, 1), node("CumProd", []string{"x", "a"}, []string{"z"}), "axis has 2 elements, want 1"},
		{"CumProd of int8", 26, []*onnx.ValueInfo{valueInfo("x", onnx.Int8, 3)}, axes(0), node("CumProd", []string{"x", "a"}, []string{"z"}), "want float, int32, int64, uint32 or uint64"},
		{"Hardmax of ints", 13, ints, nil, node("Hardmax", []string{"x"}, []string{"z"}), "Hardmax of int32, want a float type"},
		{"LpNormalization p=3", 22, f, nil, node("LpNormalization", []string{"x"}, []string{"z"}, intAttr("p", 3)), "p=3, want 1 or 2"},
		{"LpNormalization axis", 22, f, nil, node("LpNormalization", []string{"x"}, []string{"z"}, intAttr("axis", -3)), "axis -3 out of range"},
	})
}

// TestArgReduceBruteForce compares ArgMax and ArgMin with a scan over
// every lane of random small integers (many ties), for every axis and
// both tie rules.
func TestArgReduceBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	shape := Shape{3, 4, 5}
	x := NewTensor(Int32, shape)
	for i := range x.Int32s() {
		x.Int32s()[i] = int32(rng.IntN(4))
	}
	strides := shape.Strides()
	for axis := range shape {
		for _, fn := range []ReduceFn{ReduceMax, ReduceMin} {
			for _, last := range []bool{false, true} {
				op := &ArgReduce{Fn: fn, Axis: axis, KeepDims: true, SelectLast: last}
				out, err := EvalOp(op, x)
				if err != nil {
					t.Fatal(err)
				}
				ostrides := out[0].Shape().Strides()
				for i := range x.Len() {
					// Visit each lane once, from its first element.
					if (i/strides[axis])%shape[axis] != 0 {
						continue
					}
					best := 0
					for k := 1; k < shape[axis]; k++ {
						v, b := x.Int32s()[i+k*strides[axis]], x.Int32s()[i+best*strides[axis]]
						if (fn == ReduceMax && v > b) || (fn == ReduceMin && v < b) || (last && v == b) {
							best = k
						}
					}
					o := 0
					for d, s := range strides {
						if d != axis {
							o += (i / s) % shape[d] * ostrides[d]
						}
					}
					if got := out[0].Int64s()[o]; got != int64(best) {
						t.Fatalf("%s axis %d last %v: lane at %d: %d, want %d", op.Name(), axis, last, i, got, best)
					}
				}
			}
		}
	}
}

// TestTopKWideIntegers: 64-bit integers are ranked as themselves, not as
// the float64s that tie above 2⁵³ (by the sort and by the heap).
func TestTopKWideIntegers(t *testing.T) {
	const big = int64(1) << 53
	vals := []int64{big, big + 1, big - 1, big + 3, big + 2}
	for range 20 {
		vals = append(vals, 0)
	}
	for _, k := range []int{1, 2, 5} { // 4k < 25: the heap; and below, the sort
		for _, lane := range [][]int64{vals, vals[:5]} {
			got, err := EvalOp(&TopK{Axis: 0, K: k, Largest: true}, FromInt64s(Shape{len(lane)}, lane))
			if err != nil {
				t.Fatal(err)
			}
			want := []int64{3, 4, 1, 0, 2}[:k]
			if !slices.Equal(got[1].Int64s(), want) {
				t.Errorf("k %d of %d: indices %v, want %v", k, len(lane), got[1].Int64s(), want)
			}
		}
	}
	u := NewTensor(Uint64, Shape{3})
	copy(u.Uint64s(), []uint64{1<<64 - 2, 1<<64 - 1, 1 << 63})
	got, err := EvalOp(&TopK{Axis: 0, K: 3}, u)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got[1].Int64s(), []int64{2, 0, 1}) {
		t.Errorf("smallest uint64: indices %v, want [2 0 1]", got[1].Int64s())
	}
}

// TestTopKSelection: TopK, by a heap for a small k and a sort for a large
// one, picks what a stable sort of each lane picks: the larger (or
// smaller) first, ties to the lower index, NaN above every number.
func TestTopKSelection(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct {
		shape Shape
		axis  int
	}{{Shape{3, 200}, 1}, {Shape{50, 2, 3}, 0}, {Shape{4, 7}, 1}} {
		n := c.shape[c.axis]
		x := NewTensor(Float32, c.shape)
		for i := range x.Float32s() {
			x.Float32s()[i] = float32(rng.IntN(9)) // many ties
			if rng.IntN(25) == 0 {
				x.Float32s()[i] = float32(math.NaN())
			}
		}
		for _, k := range []int{0, 1, 3, n / 4, n - 1, n} {
			for _, largest := range []bool{true, false} {
				op := &TopK{Axis: c.axis, K: k, Largest: largest}
				got, err := EvalOp(op, x)
				if err != nil {
					t.Fatal(err)
				}
				inner := c.shape[c.axis+1:].Size()
				lanes := 0
				axisLoop(c.shape, c.axis, func(base, stride, n int) {
					o, in := base/(n*inner), base%inner
					idx := make([]int, n)
					for i := range idx {
						idx[i] = i
					}
					rank := func(i int) float64 { // NaN above every number
						v := float64(x.Float32s()[base+i*stride])
						if math.IsNaN(v) {
							v = math.Inf(1)
						}
						if !largest {
							v = -v
						}
						return v
					}
					sort.SliceStable(idx, func(a, b int) bool {
						ra, rb := rank(idx[a]), rank(idx[b])
						if ra == rb { // NaNs and infinities of one sign tie: lower index first
							return false
						}
						return ra > rb
					})
					for j := range k {
						p := o*k*inner + in + j*inner
						if got[1].Int64s()[p] != int64(idx[j]) {
							t.Fatalf("%v axis %d k %d largest %v: lane %d position %d is index %d, want %d", c.shape, c.axis, k, largest, lanes, j, got[1].Int64s()[p], idx[j])
						}
						if a, b := got[0].Float32s()[p], x.Float32s()[base+idx[j]*stride]; math.Float32bits(a) != math.Float32bits(b) {
							t.Fatalf("%v k %d: value %v, want %v", c.shape, k, a, b)
						}
					}
					lanes++
				})
			}
		}
	}
}
