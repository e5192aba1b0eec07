package ir

import (
	"math"
	"math/cmplx"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// naiveDFT is the definition, summed in complex128 with the angle
// reduced exactly: X[k] = Σ_t x[t]·exp(∓2πi·(k·t mod n)/n).
func naiveDFT(x []complex128, inverse bool) []complex128 {
	n := len(x)
	sign := -1.0
	if inverse {
		sign = 1
	}
	turn := make([]complex128, n)
	for j := range turn {
		turn[j] = cmplx.Exp(complex(0, sign*2*math.Pi*float64(j)/float64(n)))
	}
	out := make([]complex128, n)
	for k := range n {
		var s complex128
		for t := range n {
			s += x[t] * turn[(k*t)%n]
		}
		out[k] = s
	}
	return out
}

// TestFFTPlanMatchesDefinition: every length 1..130 (radix 2, direct and
// Bluestein paths and their boundaries) and a few large ones, forward and
// inverse, against the definition.
func TestFFTPlanMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	lengths := []int{}
	for n := 1; n <= 130; n++ {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 256, 1000, 1009, 4096, 4099)
	for _, n := range lengths {
		x := make([]complex128, n)
		for i := range x {
			x[i] = complex(rng.Float64()*2-1, rng.Float64()*2-1)
		}
		plan := newFFTPlan(n)
		for _, inverse := range []bool{false, true} {
			want := naiveDFT(x, inverse)
			re, im := make([]float64, n), make([]float64, n)
			for i, v := range x {
				re[i], im[i] = real(v), imag(v)
			}
			plan.transform(re, im, inverse)
			tol := 1e-13 * float64(n) * math.Log2(float64(n)+1)
			for k := range n {
				if d := cmplx.Abs(complex(re[k], im[k]) - want[k]); d > tol*(1+cmplx.Abs(want[k])) {
					t.Fatalf("n=%d inverse=%v: X[%d] = %v, want %v (off %g)", n, inverse, k, complex(re[k], im[k]), want[k], d)
				}
			}
		}
	}
}

// refDFTOp is the DFT op's definition on a [outer, m, inner, parts]
// signal, from naiveDFT.
func refDFTOp(x *Tensor, axis, length int, inverse, onesided bool) []float64 {
	s := x.Shape()
	r := len(s)
	parts := s[r-1]
	outer, m, inner := s[:axis].Size(), s[axis], s[axis+1:r-1].Size()
	kept, outParts := length, 2
	if onesided && !inverse {
		kept = length/2 + 1
	}
	if onesided && inverse {
		outParts = 1
	}
	out := make([]float64, outer*kept*inner*outParts)
	for o := range outer {
		for k := range inner {
			line := make([]complex128, length)
			for t := range min(m, length) {
				at := ((o*m+t)*inner + k) * parts
				v := complex(x.Float64At(at), 0)
				if parts == 2 {
					v = complex(x.Float64At(at), x.Float64At(at+1))
				}
				line[t] = v
			}
			if onesided && inverse {
				// Hermitian completion of the bins 0..length/2.
				for t := range length {
					if t > length/2 {
						line[t] = cmplx.Conj(line[length-t])
					}
				}
				if length/2+1 > m {
					for t := m; t <= length/2; t++ {
						line[t], line[(length-t)%length] = 0, 0
					}
				}
			}
			y := naiveDFT(line, inverse)
			for t := range kept {
				v := y[t]
				if inverse {
					v /= complex(float64(length), 0)
				}
				j := ((o*kept+t)*inner + k) * outParts
				out[j] = real(v)
				if outParts == 2 {
					out[j+1] = imag(v)
				}
			}
		}
	}
	return out
}

func TestDFTMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []struct {
		name              string
		shape             Shape
		axis, length      int // length 0: the default
		inverse, onesided bool
	}{
		{"real axis 1", Shape{2, 6, 3, 1}, 1, 0, false, false},
		{"complex axis 0", Shape{5, 2, 2}, 0, 0, false, false},
		{"complex inverse axis 2", Shape{2, 3, 7, 2}, 2, 0, true, false},
		{"pad", Shape{2, 5, 1}, 1, 12, false, false},
		{"crop", Shape{9, 2}, 0, 4, false, false},
		{"rfft even", Shape{3, 16, 1}, 1, 0, false, true},
		{"rfft odd padded", Shape{2, 9, 1}, 1, 11, false, true},
		{"irfft even", Shape{2, 5, 2}, 1, 0, true, true},
		{"irfft odd", Shape{6, 2, 2}, 0, 11, true, true},
		{"irfft cropped spectrum", Shape{9, 2}, 0, 8, true, true},
		{"irfft padded spectrum", Shape{3, 2}, 0, 10, true, true},
		{"bluestein", Shape{1, 67, 2}, 1, 0, false, false},
		{"negative axis", Shape{4, 3, 2}, -2, 0, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := randTensor(rng, Float32, c.shape, -1, 1)
			r := len(c.shape)
			axis := c.axis
			if axis < 0 {
				axis += r
			}
			length := c.length
			if length == 0 {
				length = c.shape[axis]
				if c.inverse && c.onesided {
					length = 2 * (c.shape[axis] - 1)
				}
			}
			want := refDFTOp(x, axis, length, c.inverse, c.onesided)
			attrs := []*onnx.Attribute{intAttr("inverse", b2i(c.inverse)), intAttr("onesided", b2i(c.onesided))}
			for _, opset := range []int64{17, 20} {
				in := []*Tensor{x, nil}
				a := attrs
				if c.length != 0 {
					in[1] = ScalarInt64(int64(c.length))
				}
				if opset == 20 {
					in = append(in, ScalarInt64(int64(c.axis)))
				} else {
					a = append(a, intAttr("axis", int64(c.axis)))
				}
				if in[len(in)-1] == nil {
					in = in[:len(in)-1]
				}
				got, err := runNode(t, opset, "DFT", 1, a, in...)
				if err != nil {
					t.Fatalf("opset %d: %v", opset, err)
				}
				if got[0].Len() != len(want) {
					t.Fatalf("opset %d: output %v, want %d elements", opset, got[0], len(want))
				}
				for i, w := range want {
					if g := got[0].Float64At(i); math.Abs(g-w) > 1e-5*(1+math.Abs(w)) {
						t.Fatalf("opset %d: element %d = %v, want %v", opset, i, g, w)
					}
				}
			}
		})
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// TestDFTRoundTrips: RFFT then IRFFT, and DFT then inverse DFT, give the
// signal back (float64 input, so to 1e-12).
func TestDFTRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{8, 15, 100, 1024, 1031} {
		x := randTensor(rng, Float64, Shape{2, n, 1}, -1, 1)
		nodes := []*onnx.Node{
			node("DFT", []string{"x", "len"}, []string{"spec"}, intAttr("onesided", 1), intAttr("axis", 1)),
			node("DFT", []string{"spec", "len"}, []string{"y"}, intAttr("onesided", 1), intAttr("inverse", 1), intAttr("axis", 1)),
			node("DFT", []string{"x"}, []string{"full"}, intAttr("axis", 1)),
			node("DFT", []string{"full"}, []string{"back"}, intAttr("inverse", 1), intAttr("axis", 1)),
		}
		got, err := runNodeModel(t, 17, nodes, []string{"y", "back"}, namedTensor{"x", x}, namedTensor{"len", ScalarInt64(int64(n))})
		if err != nil {
			t.Fatal(err)
		}
		for i := range x.Len() {
			if d := math.Abs(got[0].Float64At(i) - x.Float64At(i)); d > 1e-12 {
				t.Fatalf("n=%d: irfft(rfft(x))[%d] off by %g", n, i, d)
			}
			if d := math.Abs(got[1].Float64At(2*i) - x.Float64At(i)); d > 1e-12 || math.Abs(got[1].Float64At(2*i+1)) > 1e-12 {
				t.Fatalf("n=%d: idft(dft(x))[%d] = %v%+vi, want %v", n, i, got[1].Float64At(2*i), got[1].Float64At(2*i+1), x.Float64At(i))
			}
		}
	}
}

func TestSTFTMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct {
		name              string
		parts, step, flen int
		window, onesided  bool
	}{
		{"real windowed onesided", 1, 3, 8, true, true},
		{"real two-sided", 1, 4, 6, false, false},
		{"complex windowed", 2, 5, 7, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := randTensor(rng, Float32, Shape{2, 30, c.parts}, -1, 1)
			in := []*Tensor{x, ScalarInt64(int64(c.step)), nil, ScalarInt64(int64(c.flen))}
			var w *Tensor
			if c.window {
				w = randTensor(rng, Float32, Shape{c.flen}, 0, 1)
				in[2] = w
			}
			got, err := runNode(t, 17, "STFT", 1, []*onnx.Attribute{intAttr("onesided", b2i(c.onesided))}, in...)
			if err != nil {
				t.Fatal(err)
			}
			frames := (30-c.flen)/c.step + 1
			bins := c.flen
			if c.onesided {
				bins = c.flen/2 + 1
			}
			if want := (Shape{2, frames, bins, 2}); !got[0].Shape().Equal(want) {
				t.Fatalf("output %v, want %v", got[0].Shape(), want)
			}
			for b := range 2 {
				for f := range frames {
					frame := make([]complex128, c.flen)
					for i := range frame {
						at := (b*30 + f*c.step + i) * c.parts
						v := complex(x.Float64At(at), 0)
						if c.parts == 2 {
							v = complex(x.Float64At(at), x.Float64At(at+1))
						}
						if w != nil {
							v *= complex(w.Float64At(i), 0)
						}
						frame[i] = v
					}
					spec := naiveDFT(frame, false)
					for k := range bins {
						j := ((b*frames+f)*bins + k) * 2
						g := complex(got[0].Float64At(j), got[0].Float64At(j+1))
						if cmplx.Abs(g-spec[k]) > 1e-5*(1+cmplx.Abs(spec[k])) {
							t.Fatalf("batch %d frame %d bin %d: %v, want %v", b, f, k, g, spec[k])
						}
					}
				}
			}
		})
	}
}

// TestWindows checks the window functions against other spellings of
// their definitions: Hann as sin²(πn/d); Hamming and Blackman through
// cos(2x) = 2cos²(x) − 1; d = N when periodic, N − 1 when symmetric.
func TestWindows(t *testing.T) {
	for _, op := range []string{"HannWindow", "HammingWindow", "BlackmanWindow"} {
		for _, size := range []int{1, 2, 7, 10} {
			for _, periodic := range []int64{0, 1} {
				for _, dt := range []DType{Float32, Float64, Float16} {
					attrs := []*onnx.Attribute{intAttr("periodic", periodic), intAttr("output_datatype", int64(dt.ONNX()))}
					got, err := runNode(t, 17, op, 1, attrs, FromInt32s(Shape{}, []int32{int32(size)}))
					if err != nil {
						t.Fatal(err)
					}
					if got[0].DType() != dt || !got[0].Shape().Equal(Shape{size}) {
						t.Fatalf("%s(%d): output %v, want %s[%d]", op, size, got[0], dt, size)
					}
					d := float64(size)
					if periodic == 0 {
						d--
					}
					for n := range size {
						c := math.Cos(math.Pi * float64(n) / d)
						var want float64
						switch op {
						case "HannWindow":
							want = math.Pow(math.Sin(math.Pi*float64(n)/d), 2)
						case "HammingWindow":
							want = 25.0/46 - 21.0/46*(2*c*c-1)
						case "BlackmanWindow":
							c2 := 2*c*c - 1
							want = 0.42 - 0.5*c2 + 0.08*(2*c2*c2-1)
						}
						if d == 0 {
							want = 1
						}
						tol := 1e-12
						if dt == Float32 {
							tol = 1e-7
						} else if dt == Float16 {
							tol = 1e-3
						}
						if g := got[0].Float64At(n); math.Abs(g-want) > tol {
							t.Errorf("%s(%d, periodic=%d) %s: w[%d] = %v, want %v", op, size, periodic, dt, n, g, want)
						}
					}
				}
			}
		}
	}
}

// TestMelWeightMatrixTriangles: each mel bin is a triangle over the
// spectrum bins, 0 outside, peaking at 1, rising then falling, and
// consecutive bins' peaks move up the spectrum.
func TestMelWeightMatrixTriangles(t *testing.T) {
	in := []*Tensor{ScalarInt64(10), ScalarInt64(512), ScalarInt64(16000), ScalarFloat32(20), ScalarFloat32(8000)}
	got, err := runNode(t, 17, "MelWeightMatrix", 1, []*onnx.Attribute{intAttr("output_datatype", int64(onnx.Double))}, in...)
	if err != nil {
		t.Fatal(err)
	}
	w := got[0]
	if !w.Shape().Equal(Shape{257, 10}) || w.DType() != Float64 {
		t.Fatalf("output %v, want float64[257,10]", w)
	}
	lastPeak := -1
	for i := range 10 {
		peak, top := -1, 0.0
		for j := range 257 {
			if v := w.Float64At(j*10 + i); v > top {
				peak, top = j, v
			}
		}
		if top != 1 || peak <= lastPeak {
			t.Fatalf("mel bin %d peaks at spectrum bin %d with %v (previous peak %d)", i, peak, top, lastPeak)
		}
		lastPeak = peak
		for j := 1; j < 257; j++ {
			prev, v := w.Float64At((j-1)*10+i), w.Float64At(j*10+i)
			if v < 0 || v > 1 || (j <= peak && v < prev) || (j > peak && v > prev) {
				t.Fatalf("mel bin %d is not a triangle at spectrum bin %d: %v after %v", i, j, v, prev)
			}
		}
	}
}

// TestSignalImportErrors: malformed signal nodes are refused with an
// error naming what is wrong.
func TestSignalImportErrors(t *testing.T) {
	f := func(shape Shape) *Tensor { return NewTensor(Float32, shape) }
	i64 := func(v int64) *Tensor { return ScalarInt64(v) }
	cases := []struct {
		name  string
		op    string
		opset int64
		attrs []*onnx.Attribute
		in    []*Tensor
		want  string
	}{
		{"axis on the complex parts", "DFT", 20, nil, []*Tensor{f(Shape{4, 2}), nil, i64(-1)}, "axis -1"},
		{"axis attribute out of range", "DFT", 17, []*onnx.Attribute{intAttr("axis", 3)}, []*Tensor{f(Shape{4, 2})}, "axis 3"},
		{"onesided complex", "DFT", 20, []*onnx.Attribute{intAttr("onesided", 1)}, []*Tensor{f(Shape{4, 2})}, "onesided"},
		{"irfft of real", "DFT", 20, []*onnx.Attribute{intAttr("onesided", 1), intAttr("inverse", 1)}, []*Tensor{f(Shape{4, 1})}, "onesided inverse"},
		{"zero length", "DFT", 20, nil, []*Tensor{f(Shape{4, 1}), i64(0)}, "dft_length 0"},
		{"huge length", "DFT", 20, nil, []*Tensor{f(Shape{4, 1}), i64(1 << 40)}, "dft_length"},
		{"bad last dimension", "DFT", 20, nil, []*Tensor{f(Shape{4, 3})}, "last dimension"},
		{"integer signal", "DFT", 20, nil, []*Tensor{NewTensor(Int32, Shape{4, 1})}, "float"},
		{"window length", "STFT", 17, nil, []*Tensor{f(Shape{1, 20, 1}), i64(2), f(Shape{6}), i64(8)}, "frame_length"},
		{"frame longer than signal", "STFT", 17, nil, []*Tensor{f(Shape{1, 5, 1}), i64(2), nil, i64(8)}, "frame_length 8"},
		{"zero step", "STFT", 17, nil, []*Tensor{f(Shape{1, 20, 1}), i64(0), nil, i64(8)}, "frame_step 0"},
		{"onesided complex signal", "STFT", 17, nil, []*Tensor{f(Shape{1, 20, 2}), i64(2), nil, i64(8)}, "onesided"},
		{"negative window size", "HannWindow", 17, nil, []*Tensor{i64(-3)}, "size -3"},
		{"huge window", "HannWindow", 17, nil, []*Tensor{i64(1 << 40)}, "size"},
		{"window of bools", "HammingWindow", 17, []*onnx.Attribute{intAttr("output_datatype", int64(onnx.Bool))}, []*Tensor{i64(4)}, "output_datatype"},
		{"window size vector", "BlackmanWindow", 17, nil, []*Tensor{IntsTensor(3, 4)}, "scalar"},
		{"mel upper edge", "MelWeightMatrix", 17, nil, []*Tensor{i64(8), i64(16), i64(8000), ScalarFloat32(0), ScalarFloat32(7000)}, "upper_edge_hertz"},
		{"mel zero bins", "MelWeightMatrix", 17, nil, []*Tensor{i64(0), i64(16), i64(8000), ScalarFloat32(0), ScalarFloat32(4000)}, "num_mel_bins"},
		{"mel edges reversed", "MelWeightMatrix", 17, nil, []*Tensor{i64(4), i64(16), i64(8000), ScalarFloat32(300), ScalarFloat32(100)}, "lower_edge_hertz"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := runNode(t, c.opset, c.op, 1, c.attrs, c.in...)
			if err == nil {
				t.Fatalf("no error, want one mentioning %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

// TestSignalStaticOperands: dft_length, frame_step, frame_length, window
// sizes and MelWeightMatrix's inputs fed as graph inputs are what the
// model asks callers to bind as values; the window and signal are not.
func TestSignalStaticOperands(t *testing.T) {
	vi := func(name string, dt onnx.DataType, dims ...any) *onnx.ValueInfo { return valueInfo(name, dt, dims...) }
	m := buildModel(20, []*onnx.ValueInfo{
		vi("x", onnx.Float, 1, 16, 1), vi("len", onnx.Int64), vi("axis", onnx.Int64),
		vi("step", onnx.Int64), vi("win", onnx.Float, 8), vi("flen", onnx.Int64), vi("size", onnx.Int64),
	}, nil, []*onnx.Node{
		node("DFT", []string{"x", "len", "axis"}, []string{"y"}),
		node("STFT", []string{"x", "step", "win", "flen"}, []string{"s"}),
		node("HannWindow", []string{"size"}, []string{"h"}),
	}, "y", "s", "h")
	model, err := NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(model.ValueInputs(), ",")
	if want := "axis,flen,len,size,step"; got != want {
		t.Errorf("value inputs %s, want %s", got, want)
	}
}

// TestDFTGradient: finite differences through every form of the DFT
// (cut and padded signals, real and complex, RFFT and IRFFT of both
// parities, spectra shorter and longer than the IRFFT reads).
func TestDFTGradient(t *testing.T) {
	cases := []struct {
		name              string
		shape             Shape
		axis, length      int
		inverse, onesided bool
	}{
		{"real", Shape{2, 6, 1}, 1, 6, false, false},
		{"complex padded", Shape{5, 3, 2}, 0, 8, false, false},
		{"complex cut", Shape{2, 9, 2}, 1, 5, false, false},
		{"inverse real", Shape{7, 1}, 0, 7, true, false},
		{"inverse complex padded", Shape{3, 4, 2}, 1, 6, true, false},
		{"rfft even", Shape{10, 2, 1}, 0, 10, false, true},
		{"rfft odd cut", Shape{2, 11, 1}, 1, 9, false, true},
		{"irfft even", Shape{2, 5, 2}, 1, 8, true, true},
		{"irfft odd", Shape{6, 2}, 0, 11, true, true},
		{"irfft short spectrum", Shape{3, 2}, 0, 10, true, true},
		{"irfft long spectrum", Shape{9, 2}, 0, 6, true, true},
		{"bluestein", Shape{67, 2}, 0, 67, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runGradCase(t, gradCase{name: "dft " + c.name, build: func(h *caseBuilder) []*Value {
				x := h.param(c.shape, -1, 1)
				return []*Value{h.op(&DFT{Axis: c.axis, Length: c.length, Inverse: c.inverse, OneSided: c.onesided}, x)}
			}})
		})
	}
}

// TestSTFTGradient: the imported STFT (gathered frames, window, DFT)
// differentiates with respect to a signal and a window that are float64
// initializers; checked against central differences of the loss.
func TestSTFTGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	signal := randTensor(rng, Float64, Shape{2, 20, 1}, -1, 1)
	window := randTensor(rng, Float64, Shape{6}, 0, 1)
	m := buildModel(17, nil, []*onnx.Tensor{initializer(t, "x", signal), initializer(t, "w", window),
		initializer(t, "step", ScalarInt64(4)), initializer(t, "len", ScalarInt64(6))},
		[]*onnx.Node{node("STFT", []string{"x", "step", "w", "len"}, []string{"y"})}, "y")
	g, err := FromONNX(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkTrainingGrad(t, g, map[string]*Tensor{TargetsInput: randTensor(rng, Float64, Shape{2, 4, 4, 2}, -1, 1)})
}
