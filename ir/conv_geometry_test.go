package ir

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// transposedConv1D is a 1-D ConvTranspose of x [n] by w [k] written out:
// every input position scatters its kernel into the natural output of
// stride·(n-1) + adjust + dilation·(k-1) + 1 positions; the result is that
// natural output read from position begin for length positions, zero past
// its end.
func transposedConv1D(x, w []float64, stride, dilation, adjust, begin, length int) []float64 {
	natural := stride*(len(x)-1) + adjust + dilation*(len(w)-1) + 1
	full := make([]float64, max(natural, begin+length))
	for i, xv := range x {
		for j, wv := range w {
			full[i*stride+j*dilation] += xv * wv
		}
	}
	return full[begin : begin+length]
}

// TestConvTransposeDerivedPads: where the pads are derived (output_shape
// given, or auto_pad SAME_*), the output is the natural output cut at the
// offset onnxruntime 1.30 cuts it at. The begin column is what onnxruntime
// gave for these models (x [1,1,n], w [1,1,k]): output_shape overrides the
// pads attribute; the cut is total = max(0, natural - output) split with
// the odd one at the beginning, except for SAME_UPPER where it is at the
// end; an output_shape past the natural length adds zeros at the end; and
// SAME_* keeps a natural output shorter than in·stride whole.
func TestConvTransposeDerivedPads(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, c := range []struct {
		n, k, stride, dilation, adjust int
		autoPad                        string
		pads, outputShape              []int64
		begin, length                  int
	}{
		// n=4, k=3, stride 2: natural 9.
		{4, 3, 2, 1, 0, "", nil, []int64{3}, 3, 3},
		{4, 3, 2, 1, 0, "", nil, []int64{4}, 3, 4},
		{4, 3, 2, 1, 0, "", []int64{1, 2}, []int64{4}, 3, 4},
		{4, 3, 2, 1, 0, "", []int64{2, 0}, []int64{7}, 1, 7},
		{4, 3, 2, 1, 0, "VALID", nil, []int64{4}, 3, 4},
		{4, 3, 2, 1, 0, "SAME_LOWER", nil, []int64{4}, 3, 4},
		{4, 3, 2, 1, 0, "SAME_UPPER", nil, []int64{4}, 2, 4},
		{4, 3, 2, 1, 0, "SAME_UPPER", nil, []int64{2}, 3, 2},
		{4, 3, 2, 1, 0, "", nil, []int64{10}, 0, 10},
		{4, 3, 2, 1, 0, "SAME_UPPER", nil, []int64{10}, 0, 10},
		// n=4, k=3, stride 2, output_padding 1: natural 10.
		{4, 3, 2, 1, 1, "", nil, []int64{5}, 3, 5},
		{4, 3, 2, 1, 1, "SAME_UPPER", nil, []int64{5}, 2, 5},
		// n=5, k=3, dilation 2: natural 9.
		{5, 3, 1, 2, 0, "", []int64{1, 2}, []int64{3}, 3, 3},
		// No output_shape: SAME_* aims at in·stride.
		{4, 3, 2, 1, 0, "SAME_UPPER", nil, nil, 0, 8},
		{4, 3, 2, 1, 0, "SAME_LOWER", nil, nil, 1, 8},
		// in·stride = 18 is past the natural 17: kept at 17.
		{6, 1, 3, 2, 1, "SAME_UPPER", nil, nil, 0, 17},
		{6, 1, 3, 2, 1, "SAME_LOWER", nil, nil, 0, 17},
	} {
		attrs := []*onnx.Attribute{intsAttr("strides", int64(c.stride)), intsAttr("dilations", int64(c.dilation))}
		if c.adjust != 0 {
			attrs = append(attrs, intsAttr("output_padding", int64(c.adjust)))
		}
		if c.autoPad != "" {
			attrs = append(attrs, stringAttr("auto_pad", c.autoPad))
		}
		if c.pads != nil {
			attrs = append(attrs, intsAttr("pads", c.pads...))
		}
		if c.outputShape != nil {
			attrs = append(attrs, intsAttr("output_shape", c.outputShape...))
		}
		t.Run(fmt.Sprintf("n%d,k%d%s", c.n, c.k, attrsString(attrs)), func(t *testing.T) {
			x := randTensor(rng, Float64, Shape{1, 1, c.n}, -1, 1)
			w := randTensor(rng, Float64, Shape{1, 1, c.k}, -1, 1)
			got, err := runNode(t, 22, "ConvTranspose", 1, attrs, x, w)
			if err != nil {
				t.Fatal(err)
			}
			want := transposedConv1D(x.Float64s(), w.Float64s(), c.stride, c.dilation, c.adjust, c.begin, c.length)
			if !got[0].Shape().Equal(Shape{1, 1, c.length}) {
				t.Fatalf("output %v, want [1,1,%d]", got[0].Shape(), c.length)
			}
			for i, v := range want {
				if g := got[0].Float64s()[i]; math.Abs(g-v) > 1e-12 {
					t.Fatalf("output %d is %g, want %g (the natural output from %d)", i, g, v, c.begin)
				}
			}
			m, feeds := oneNodeModel(t, 22, "ConvTranspose", attrs, []nodeInput{feed(Convert(x, Float32)), feed(Convert(w, Float32))}, 1)
			t.Run("onnxruntime", func(t *testing.T) { checkAgainstORT(t, m, feeds, 1e-5, 1e-6) })
		})
	}
}

// TestConvTransposeEmptySpatialInput: an input with no positions along a
// spatial axis still has an output, of the natural length
// stride·(0-1) + dilation·(kernel-1) + 1 there: the bias alone.
func TestConvTransposeEmptySpatialInput(t *testing.T) {
	x := NewTensor(Float32, Shape{1, 2, 0, 3})
	w := filled(Float32, Shape{2, 2, 3, 3}, 1)
	b := FromFloat32s(Shape{2}, []float32{0.5, -2})
	got, err := runNode(t, 22, "ConvTranspose", 1, nil, x, w, b)
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Shape().Equal(Shape{1, 2, 2, 5}) {
		t.Fatalf("output %v, want [1,2,2,5]", got[0].Shape())
	}
	for i, v := range got[0].Float32s() {
		if want := b.Float32s()[i/10]; v != want {
			t.Fatalf("output %d is %g, want the bias %g", i, v, want)
		}
	}
}

// TestConvGeometryOverflow: strides, dilations and pads whose window
// arithmetic overflows an int are refused with a message naming them,
// rather than wrapped (a dilation of 2⁶² over a kernel of 5 would
// put taps 0 and 4 at the same place); large values that do not overflow
// still work.
func TestConvGeometryOverflow(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	x := randTensor(rng, Float32, Shape{1, 1, 10, 10}, -1, 1)
	for _, c := range []struct {
		op    string
		w     Shape
		attrs []*onnx.Attribute
		want  string
	}{
		{"Conv", Shape{1, 1, 5, 1}, []*onnx.Attribute{intsAttr("dilations", 1<<62, 1)}, "dilation 4611686018427387904"},
		{"Conv", Shape{1, 1, 2, 2}, []*onnx.Attribute{intsAttr("pads", 1<<62, 0, 1<<62, 0)}, "pads"},
		{"MaxPool", nil, []*onnx.Attribute{intsAttr("kernel_shape", 3, 1), intsAttr("dilations", 1<<62, 1)}, "dilation 4611686018427387904"},
		{"ConvTranspose", Shape{1, 1, 5, 1}, []*onnx.Attribute{intsAttr("dilations", 1<<62, 1)}, "dilations [4611686018427387904 1]"},
		{"ConvTranspose", Shape{1, 1, 3, 1}, []*onnx.Attribute{intsAttr("strides", 1<<62, 1)}, "strides [4611686018427387904 1]"},
	} {
		t.Run(c.op+attrsString(c.attrs), func(t *testing.T) {
			ins := []nodeInput{feed(x)}
			if c.w != nil {
				ins = append(ins, feed(randTensor(rng, Float32, c.w, -1, 1)))
			}
			m, _ := oneNodeModel(t, 22, c.op, c.attrs, ins, 1)
			wantImportError(t, m, nil, c.want)
		})
	}
	// A stride of 2⁶² leaves one window, at 0.
	w := randTensor(rng, Float32, Shape{1, 1, 2, 2}, -1, 1)
	got, err := runNode(t, 22, "Conv", 1, []*onnx.Attribute{intsAttr("strides", 1<<62, 1<<62)}, x, w)
	if err != nil {
		t.Fatal(err)
	}
	want := 0.0
	for i := range 2 {
		for j := range 2 {
			want += x.Float64At(i*10+j) * w.Float64At(i*2+j)
		}
	}
	if !got[0].Shape().Equal(Shape{1, 1, 1, 1}) || math.Abs(got[0].Float64At(0)-want) > 1e-5 {
		t.Errorf("got %v %v, want [1,1,1,1] holding %g", got[0].Shape(), values(got[0]), want)
	}
}

// TestWindowCount: the count of windows is the definition's, counted
// window by window, for every small geometry; ceil mode adds the partial
// last window unless it would start in the end padding.
func TestWindowCount(t *testing.T) {
	for in := range 7 {
		for kernel := 1; kernel <= 3; kernel++ {
			for stride := 1; stride <= 3; stride++ {
				for dilation := 1; dilation <= 2; dilation++ {
					for pb := range 3 {
						for pe := range 3 {
							for _, ceil := range []bool{false, true} {
								span := dilation*(kernel-1) + 1
								want := 0
								// Window starts s (in padded coordinates):
								// whole windows, then in ceil mode a
								// partial one where the last whole window
								// stops short of the end, unless it would
								// start in the end padding.
								for s := 0; ; s += stride {
									if s+span <= in+pb+pe {
										want++
										continue
									}
									if ceil && s-stride+span < in+pb+pe && s < in+pb {
										want++
									}
									break
								}
								got, err := windowCount(in, kernel, stride, dilation, pb, pe, ceil)
								if in+pb+pe < span {
									if err == nil {
										t.Errorf("windowCount(%d, %d, %d, %d, %d, %d, %v) = %d, want an error", in, kernel, stride, dilation, pb, pe, ceil, got)
									}
									continue
								}
								if err != nil || got != want {
									t.Errorf("windowCount(%d, %d, %d, %d, %d, %d, %v) = %d, %v; want %d", in, kernel, stride, dilation, pb, pe, ceil, got, err, want)
								}
							}
						}
					}
				}
			}
		}
	}
	for _, c := range []struct {
		in, kernel, stride, dilation, pb, pe int
		want                                 string
	}{
		{10, 5, 1, 1 << 62, 0, 0, "dilation"},
		{10, 2, 1, math.MaxInt, 0, 0, "dilation"},
		{10, 2, 1, 1, math.MaxInt - 5, 0, "pads"},
		{10, 2, 1, 1, math.MinInt + 5, -20, "pads"},
		{10, 0, 1, 1, 0, 0, "positive"},
		{10, 2, 0, 1, 0, 0, "positive"},
	} {
		if _, err := windowCount(c.in, c.kernel, c.stride, c.dilation, c.pb, c.pe, false); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("windowCount(%d, %d, %d, %d, %d, %d): error %v, want one about %s", c.in, c.kernel, c.stride, c.dilation, c.pb, c.pe, err, c.want)
		}
	}
}
