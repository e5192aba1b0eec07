package ir

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// TestGridSampleMatchesOnnxruntime: every mode, padding mode and
// align_corners, 2-D and 3-D, with grid points well outside [-1, 1] so
// that padding and reflection matter.
func TestGridSampleMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(23, 24))
	type shapes struct{ x, grid Shape }
	for _, s := range []shapes{{Shape{2, 3, 4, 5}, Shape{2, 3, 6, 2}}, {Shape{1, 2, 3, 4, 2}, Shape{1, 2, 3, 2, 3}}} {
		for _, mode := range []string{"linear", "nearest", "cubic"} {
			if mode == "cubic" && len(s.x) == 5 {
				continue // cubic is defined for 2-D only
			}
			for _, pad := range []string{"zeros", "border", "reflection"} {
				if mode == "cubic" && pad == "border" {
					// ONNX's definition clamps the coordinate to the
					// border and interpolates around it; onnxruntime (as
					// PyTorch) clamps each of the 4 taps instead.
					continue
				}
				for _, align := range []int64{0, 1} {
					attrs := []*onnx.Attribute{stringAttr("mode", mode), stringAttr("padding_mode", pad), intAttr("align_corners", align)}
					t.Run(fmt.Sprintf("%v%s", s.x, attrsString(attrs)), func(t *testing.T) {
						x := randTensor(rng, Float32, s.x, -2, 2)
						grid := randTensor(rng, Float32, s.grid, -1.7, 1.7)
						m, feeds := oneNodeModel(t, 20, "GridSample", attrs, []nodeInput{feed(x), feed(grid)}, 1)
						checkAgainstORT(t, m, feeds, 1e-4, 1e-5)
					})
				}
			}
		}
	}
	// GridSample-16 spells the modes bilinear and bicubic.
	for _, mode := range []string{"bilinear", "bicubic"} {
		t.Run("16/"+mode, func(t *testing.T) {
			x := randTensor(rng, Float32, Shape{1, 2, 3, 4}, -2, 2)
			grid := randTensor(rng, Float32, Shape{1, 5, 2, 2}, -1.2, 1.2)
			m, feeds := oneNodeModel(t, 16, "GridSample", []*onnx.Attribute{stringAttr("mode", mode)}, []nodeInput{feed(x), feed(grid)}, 1)
			checkAgainstORT(t, m, feeds, 1e-4, 1e-5)
		})
	}
}

// TestGridSampleReflection: reflecting folds any coordinate back into the
// borders, the period being twice the span.
func TestGridSampleReflection(t *testing.T) {
	for _, c := range []struct{ x, lo, hi, want float64 }{
		{0.3, 0, 2, 0.3}, {-0.5, 0, 2, 0.5}, {2.5, 0, 2, 1.5}, {4.5, 0, 2, 0.5}, {-4.5, 0, 2, 0.5},
		{-1.2, -0.5, 3.5, 0.2}, {9, -0.5, 3.5, 1}, {1, 0, 0, 0},
	} {
		if got := reflect(c.x, c.lo, c.hi); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("reflect(%g, %g, %g) = %g, want %g", c.x, c.lo, c.hi, got, c.want)
		}
	}
}

// TestAffineGridMatchesOnnxruntime: 2-D and 3-D, both align_corners. An
// axis of length 1 with align_corners has no agreed place: ONNX's
// definition puts it at -1 (as dstune), onnxruntime at +1, PyTorch at 0.
func TestAffineGridMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(25, 26))
	for _, size := range [][]int{{2, 3, 4, 5}, {1, 1, 3, 1, 4}, {2, 1, 1, 3}, {1, 2, 2, 3, 4}} {
		for _, align := range []int64{0, 1} {
			if align == 1 && slices.Contains(size[2:], 1) {
				continue
			}
			t.Run(fmt.Sprintf("%v/align_corners=%d", size, align), func(t *testing.T) {
				r := len(size) - 2
				theta := randTensor(rng, Float32, Shape{size[0], r, r + 1}, -1, 1)
				m, feeds := oneNodeModel(t, 20, "AffineGrid", []*onnx.Attribute{intAttr("align_corners", align)}, []nodeInput{feed(theta), fixed(IntsTensor(size...))}, 1)
				checkAgainstORT(t, m, feeds, 1e-5, 1e-6)
			})
		}
	}
}

func TestAffineGridGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 28))
	theta := randTensor(rng, Float64, Shape{2, 2, 3}, -1, 1)
	m, _ := oneNodeModel(t, 20, "AffineGrid", nil, []nodeInput{weight(theta), fixed(IntsTensor(2, 1, 3, 4))}, 1)
	checkImportedGrad(t, m, nil, 1e-6)
}

func TestGridErrors(t *testing.T) {
	x := NewTensor(Float32, Shape{1, 1, 3, 3})
	grid := NewTensor(Float32, Shape{1, 2, 2, 2})
	theta := NewTensor(Float32, Shape{1, 2, 3})
	for _, c := range []struct {
		name  string
		op    string
		ins   []nodeInput
		attrs []*onnx.Attribute
		want  string
	}{
		{"mode", "GridSample", []nodeInput{feed(x), feed(grid)}, []*onnx.Attribute{stringAttr("mode", "area")}, `mode "area"`},
		{"padding", "GridSample", []nodeInput{feed(x), feed(grid)}, []*onnx.Attribute{stringAttr("padding_mode", "wrap")}, `padding_mode "wrap"`},
		{"align", "GridSample", []nodeInput{feed(x), feed(grid)}, []*onnx.Attribute{intAttr("align_corners", 2)}, "align_corners 2"},
		{"grid shape", "GridSample", []nodeInput{feed(x), feed(NewTensor(Float32, Shape{1, 2, 2, 3}))}, nil, "N×O1..Or×r"},
		{"affine size", "AffineGrid", []nodeInput{feed(theta), fixed(IntsTensor(1, 1, 3))}, nil, "size [1 1 3]"},
		{"affine theta", "AffineGrid", []nodeInput{feed(theta), fixed(IntsTensor(2, 1, 3, 3))}, nil, "theta is float32[1,2,3], want a float tensor [2, 2, 3]"},
		{"affine huge", "AffineGrid", []nodeInput{feed(theta), fixed(IntsTensor(1, 1, 1<<20, 1<<20))}, nil, "size [1 1"},
		{"affine runtime size", "AffineGrid", []nodeInput{feed(theta), feed(IntsTensor(1, 1, 3, 3))}, nil, "must be known at import"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := oneNodeModel(t, 20, c.op, c.attrs, c.ins, 1)
			wantImportError(t, m, nil, c.want)
		})
	}
}

// TestGridSampleGradient: the gradients with respect to the input and the
// grid, for every mode, padding mode and align_corners, 2-D and 3-D,
// against central differences.
func TestGridSampleGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	type shapes struct{ x, grid Shape }
	for _, s := range []shapes{{Shape{1, 2, 3, 4}, Shape{1, 3, 2, 2}}, {Shape{1, 1, 3, 2, 3}, Shape{1, 2, 2, 1, 3}}} {
		for _, mode := range []string{"linear", "nearest", "cubic"} {
			if mode == "cubic" && len(s.x) == 5 {
				continue
			}
			for _, pad := range []string{"zeros", "border", "reflection"} {
				for _, align := range []int64{0, 1} {
					attrs := []*onnx.Attribute{stringAttr("mode", mode), stringAttr("padding_mode", pad), intAttr("align_corners", align)}
					t.Run(fmt.Sprintf("%v%s", s.x, attrsString(attrs)), func(t *testing.T) {
						x := randTensor(rng, Float64, s.x, -2, 2)
						grid := randTensor(rng, Float64, s.grid, -1.4, 1.4)
						m, _ := oneNodeModel(t, 20, "GridSample", attrs, []nodeInput{weight(x), weight(grid)}, 1)
						checkImportedGrad(t, m, nil, 1e-6)
					})
				}
			}
		}
	}
}

// TestSpatialTransformerGradient: AffineGrid feeding GridSample, as a
// spatial transformer has it, differentiated with respect to theta and
// the image.
func TestSpatialTransformerGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(45, 46))
	theta := randTensor(rng, Float64, Shape{2, 2, 3}, -0.8, 0.8)
	x := randTensor(rng, Float64, Shape{2, 1, 4, 5}, -1, 1)
	m := buildModel(20, nil, []*onnx.Tensor{initializer(t, "theta", theta), initializer(t, "x", x)}, []*onnx.Node{
		constNode(t, "size", IntsTensor(2, 1, 3, 3)),
		node("AffineGrid", []string{"theta", "size"}, []string{"grid"}),
		node("GridSample", []string{"x", "grid"}, []string{"y"}, stringAttr("padding_mode", "border")),
	}, "y")
	checkImportedGrad(t, m, nil, 1e-6)
}
