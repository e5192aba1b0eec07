package ir

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// Signal-processing operators: DFT and STFT (IR ops computed in float64
// through fftPlan), and HannWindow, HammingWindow, BlackmanWindow and
// MelWeightMatrix, which depend only on inputs known at import and so
// import as constants.

func init() {
	registerOp("", "DFT", importDFT)
	registerOp("", "STFT", importSTFT)
	registerOp("", "HannWindow", importWindow(hannWindow))
	registerOp("", "HammingWindow", importWindow(hammingWindow))
	registerOp("", "BlackmanWindow", importWindow(blackmanWindow))
	registerOp("", "MelWeightMatrix", importMelWeightMatrix)
	registerStaticOperands("", "DFT", 1, 2)         // dft_length, axis (opset 20)
	registerStaticOperands("", "STFT", 1, 3)        // frame_step, frame_length
	registerStaticOperands("", "HannWindow", 0)     // size
	registerStaticOperands("", "HammingWindow", 0)  // size
	registerStaticOperands("", "BlackmanWindow", 0) // size
	registerStaticOperands("", "MelWeightMatrix", 0, 1, 2, 3, 4)
}

// ---------------------------------------------------------------- DFT

// DFT is the discrete Fourier transform along Axis of a signal whose last
// dimension holds the real part (size 1) or the real and imaginary parts
// (size 2) of each sample:
//
//	y[k] = Σ_{t<Length} x[t]·exp(−2πi·k·t/Length)            (forward)
//	y[t] = 1/Length · Σ_{k<Length} x[k]·exp(+2πi·k·t/Length)  (Inverse)
//
// with x cut or zero-padded to Length along Axis. OneSided forward
// transforms a real signal and keeps the Length/2+1 bins the others
// mirror (RFFT); OneSided inverse reads those bins of a complex spectrum,
// completes it by conjugate symmetry and returns the real signal of
// Length samples (IRFFT). Otherwise the output is complex, Length along
// Axis. Computed in float64.
type DFT struct {
	Axis     int // < rank−1
	Length   int
	Inverse  bool
	OneSided bool
}

func (op *DFT) Name() string { return "DFT" }

func (op *DFT) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantDTypes("input", x, isFloat, "a float type"); err != nil {
		return nil, err
	}
	r := len(x.Shape)
	if r < 2 || (x.Shape[r-1] != 1 && x.Shape[r-1] != 2) {
		return nil, fmt.Errorf("input %v: want a last dimension of 1 (real) or 2 (complex)", x.Shape)
	}
	if op.Axis < 0 || op.Axis >= r-1 {
		return nil, fmt.Errorf("axis %d out of range for input %v (the last dimension holds the complex parts)", op.Axis, x.Shape)
	}
	if op.Length < 1 {
		return nil, fmt.Errorf("dft_length %d, want at least 1", op.Length)
	}
	complexIn := x.Shape[r-1] == 2
	out := x.Shape.Clone()
	out[op.Axis], out[r-1] = op.Length, 2
	switch {
	case op.OneSided && !op.Inverse:
		if complexIn {
			return nil, fmt.Errorf("onesided forward DFT of a complex input (only a real signal has a one-sided spectrum)")
		}
		out[op.Axis] = op.Length/2 + 1
	case op.OneSided && op.Inverse:
		if !complexIn {
			return nil, fmt.Errorf("onesided inverse DFT of a real input (it reads a complex one-sided spectrum)")
		}
		out[r-1] = 1
	}
	return []Type{{x.DType, out}}, nil
}

func (op *DFT) Eval(in, out []*Tensor) error {
	x, y := Convert(in[0], Float64).Float64s(), out[0]
	xs, ys := in[0].shape, y.shape
	r := len(xs)
	xc, yc := xs[r-1], ys[r-1]
	outer := xs[:op.Axis].Size()
	inner := xs[op.Axis+1 : r-1].Size()
	m, n, kept := xs[op.Axis], op.Length, ys[op.Axis]
	plan := newFFTPlan(n)
	re, im := make([]float64, n), make([]float64, n)
	res := make([]float64, y.Len())
	for o := range outer {
		for k := range inner {
			at := func(t int) int { return ((o*m+t)*inner + k) * xc }
			clear(re)
			clear(im)
			if op.OneSided && op.Inverse {
				// Bins beyond the input or the Nyquist bin are zero; the
				// upper half mirrors the lower one.
				for t := range min(m, n/2+1) {
					re[t], im[t] = x[at(t)], x[at(t)+1]
					if t > 0 && n-t > n/2 {
						re[n-t], im[n-t] = re[t], -im[t]
					}
				}
			} else {
				for t := range min(m, n) {
					re[t] = x[at(t)]
					if xc == 2 {
						im[t] = x[at(t)+1]
					}
				}
			}
			plan.transform(re, im, op.Inverse)
			norm := 1.0
			if op.Inverse {
				norm = 1 / float64(n)
			}
			for t := range kept {
				j := ((o*kept+t)*inner + k) * yc
				res[j] = re[t] * norm
				if yc == 2 {
					res[j+1] = im[t] * norm
				}
			}
		}
	}
	storeFloats(y, res)
	return nil
}

// dftAxis resolves a DFT axis against the input's rank r: [−r, −2] counts
// from the end, [0, r−2] from the start; the last axis holds the complex
// parts and is not a signal axis.
func dftAxis(axis, r int) (int, error) {
	a := axis
	if a < 0 {
		a += r
	}
	if a < 0 || a >= r-1 {
		return 0, fmt.Errorf("axis %d out of range for rank %d (want [%d, -2] or [0, %d])", axis, r, -r, r-2)
	}
	return a, nil
}

// scalarInt reads input i, a one-element integer tensor known at import.
func (im *importer) scalarInt(in []*Value, i int, what string) (int, bool, error) {
	v, ok, err := im.constInts(in, i, what)
	if err != nil || !ok {
		return 0, ok, err
	}
	if len(v) != 1 {
		return 0, false, fmt.Errorf("%s has %d elements, want a scalar", what, len(v))
	}
	return v[0], true, nil
}

func importDFT(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 3); err != nil {
		return nil, err
	}
	x := in[0]
	r := len(x.Shape)
	if r < 2 {
		return nil, fmt.Errorf("input %v: want a signal with a last dimension of 1 or 2", x.Shape)
	}
	inverse, err := attrInt(n, "inverse", 0)
	if err != nil {
		return nil, err
	}
	onesided, err := attrInt(n, "onesided", 0)
	if err != nil {
		return nil, err
	}
	axis := 1
	if im.opset >= 20 {
		axis = -2
		if a, ok, err := im.scalarInt(in, 2, "axis"); err != nil {
			return nil, err
		} else if ok {
			axis = a
		}
	} else {
		if len(in) > 2 {
			return nil, fmt.Errorf("want 1 or 2 inputs before opset 20, got %d", len(in))
		}
		if axis, err = attrInt(n, "axis", 1); err != nil {
			return nil, err
		}
	}
	if axis, err = dftAxis(axis, r); err != nil {
		return nil, err
	}
	length := x.Shape[axis]
	if onesided != 0 && inverse != 0 {
		length = 2 * (x.Shape[axis] - 1)
	}
	if l, ok, err := im.scalarInt(in, 1, "dft_length"); err != nil {
		return nil, err
	} else if ok {
		length = l
	}
	if length < 1 {
		return nil, fmt.Errorf("dft_length %d, want at least 1", length)
	}
	if err := checkShape(Shape{length, 2}, 8, maxTensorBytes); err != nil {
		return nil, fmt.Errorf("dft_length: %w", err)
	}
	return one(im.emit1(&DFT{Axis: axis, Length: length, Inverse: inverse != 0, OneSided: onesided != 0}, x))
}

// ---------------------------------------------------------------- STFT

// STFT is the short-time Fourier transform of signal [batch, length, 1 or
// 2]: frame f is the FrameLength samples from f·FrameStep, multiplied by
// the window (input 1, FrameLength real values; absent: ones) and
// transformed by a DFT of length FrameLength. The output is [batch,
// frames, bins, 2] with frames = (length − FrameLength)/FrameStep + 1 and
// bins = FrameLength/2+1 when OneSided (a real signal only), FrameLength
// otherwise. Computed in float64.
type STFT struct {
	FrameStep, FrameLength int
	OneSided               bool
}

func (op *STFT) Name() string { return "STFT" }

func (op *STFT) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 2); err != nil {
		return nil, err
	}
	x := in[0]
	if err := wantDTypes("signal", x, isFloat, "a float type"); err != nil {
		return nil, err
	}
	if len(x.Shape) != 3 || (x.Shape[2] != 1 && x.Shape[2] != 2) {
		return nil, fmt.Errorf("signal %v, want [batch, length, 1 or 2]", x.Shape)
	}
	if op.FrameStep < 1 || op.FrameLength < 1 {
		return nil, fmt.Errorf("frame_step %d and frame_length %d, want positive", op.FrameStep, op.FrameLength)
	}
	if op.FrameLength > x.Shape[1] {
		return nil, fmt.Errorf("frame_length %d exceeds the signal's %d samples", op.FrameLength, x.Shape[1])
	}
	if op.OneSided && x.Shape[2] == 2 {
		return nil, fmt.Errorf("onesided STFT of a complex signal (only a real signal has a one-sided spectrum)")
	}
	if w, ok := optional(in, 1); ok && (w.DType != x.DType || !w.Shape.Equal(Shape{op.FrameLength})) {
		return nil, fmt.Errorf("window is %v, want %s[%d] (frame_length)", w, x.DType, op.FrameLength)
	}
	bins := op.FrameLength
	if op.OneSided {
		bins = bins/2 + 1
	}
	frames := (x.Shape[1]-op.FrameLength)/op.FrameStep + 1
	return []Type{{x.DType, Shape{x.Shape[0], frames, bins, 2}}}, nil
}

func (op *STFT) Eval(in, out []*Tensor) error {
	x, y := Convert(in[0], Float64).Float64s(), out[0]
	var window []float64
	if w := optionalTensor(in, 1); w != nil {
		window = Convert(w, Float64).Float64s()
	}
	batch, length, parts := in[0].shape[0], in[0].shape[1], in[0].shape[2]
	frames, bins, n := y.shape[1], y.shape[2], op.FrameLength
	plan := newFFTPlan(n)
	re, im := make([]float64, n), make([]float64, n)
	res := make([]float64, y.Len())
	for b := range batch {
		for f := range frames {
			for t := range n {
				w := 1.0
				if window != nil {
					w = window[t]
				}
				at := (b*length + f*op.FrameStep + t) * parts
				re[t], im[t] = x[at]*w, 0
				if parts == 2 {
					im[t] = x[at+1] * w
				}
			}
			plan.transform(re, im, false)
			for k := range bins {
				j := ((b*frames+f)*bins + k) * 2
				res[j], res[j+1] = re[k], im[k]
			}
		}
	}
	storeFloats(y, res)
	return nil
}

func importSTFT(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 4); err != nil {
		return nil, err
	}
	x := in[0]
	step, _, err := im.scalarInt(in, 1, "frame_step")
	if err != nil {
		return nil, err
	}
	var window *Value
	if len(in) > 2 {
		window = in[2]
	}
	length, haveLength, err := im.scalarInt(in, 3, "frame_length")
	if err != nil {
		return nil, err
	}
	switch {
	case window != nil && len(window.Shape) != 1:
		return nil, fmt.Errorf("window %v, want a vector", window.Shape)
	case window != nil && haveLength && window.Shape[0] != length:
		return nil, fmt.Errorf("window of %d values and frame_length %d differ", window.Shape[0], length)
	case window != nil:
		length = window.Shape[0]
	case !haveLength && len(x.Shape) >= 2:
		length = x.Shape[1]
	}
	onesided, err := attrInt(n, "onesided", 1)
	if err != nil {
		return nil, err
	}
	op := &STFT{FrameStep: step, FrameLength: length, OneSided: onesided != 0}
	if window == nil {
		return one(im.emit1(op, x))
	}
	return one(im.emit1(op, x, window))
}

// ---------------------------------------------------------------- windows

// The window functions at n of a window of denominator d (size when
// periodic, size−1 when symmetric).
func hannWindow(n, d float64) float64 { return 0.5 - 0.5*math.Cos(2*math.Pi*n/d) }

func hammingWindow(n, d float64) float64 {
	const alpha = 25.0 / 46
	return alpha - (1-alpha)*math.Cos(2*math.Pi*n/d)
}

func blackmanWindow(n, d float64) float64 {
	return 0.42 - 0.5*math.Cos(2*math.Pi*n/d) + 0.08*math.Cos(4*math.Pi*n/d)
}

// windowType reads a node's output_datatype attribute (default float32).
func windowType(n *onnx.Node) (DType, error) {
	dt, err := optionalDTypeAttr(n, "output_datatype")
	if err != nil {
		return InvalidDType, err
	}
	if dt == InvalidDType {
		return Float32, nil
	}
	if !dt.computable() {
		return InvalidDType, fmt.Errorf("attribute output_datatype is %s, want a number type", dt)
	}
	return dt, nil
}

// importWindow imports a window function of the size input (known at
// import) as a constant: w[n] = fn(n, size) when periodic (the default),
// fn(n, size−1) when symmetric; a symmetric window of one sample is 1.
func importWindow(fn func(n, d float64) float64) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		if err := wantIn(in, 1, 1); err != nil {
			return nil, err
		}
		size, _, err := im.scalarInt(in, 0, "size")
		if err != nil {
			return nil, err
		}
		if size < 0 {
			return nil, fmt.Errorf("size %d, want at least 0", size)
		}
		dt, err := windowType(n)
		if err != nil {
			return nil, err
		}
		if _, err := checkedSizeLimit([]int64{int64(size)}, dt.Size(), maxFoldBytes); err != nil {
			return nil, fmt.Errorf("size: %w", err)
		}
		periodic, err := attrInt(n, "periodic", 1)
		if err != nil {
			return nil, err
		}
		d := float64(size)
		if periodic == 0 {
			d = float64(size - 1)
		}
		w := make([]float64, size)
		for i := range w {
			w[i] = 1
			if d > 0 {
				w[i] = fn(float64(i), d)
			}
		}
		out := NewTensor(dt, Shape{size})
		storeNumbers(out, w)
		return []*Value{im.constant(out)}, nil
	}
}

// ---------------------------------------------------------------- MelWeightMatrix

// importMelWeightMatrix imports the matrix [dft_length/2+1, num_mel_bins]
// that maps a one-sided spectrum to mel bins, as a constant: num_mel_bins+2
// points equally spaced on the mel scale (mel = 2595·log10(1 + hz/700))
// from lower_edge_hertz to upper_edge_hertz, each mapped to the spectrum
// bin floor((dft_length+1)·hz/sample_rate); bin i rises linearly from
// point i to point i+1 and falls to point i+2. The spacing divides the
// mel range by num_mel_bins+2, as ONNX's reference does.
func importMelWeightMatrix(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 5, 5); err != nil {
		return nil, err
	}
	var ints [3]int
	for i, what := range []string{"num_mel_bins", "dft_length", "sample_rate"} {
		v, _, err := im.scalarInt(in, i, what)
		if err != nil {
			return nil, err
		}
		if v < 1 {
			return nil, fmt.Errorf("%s is %d, want at least 1", what, v)
		}
		ints[i] = v
	}
	var edges [2]float64
	for i, what := range []string{"lower_edge_hertz", "upper_edge_hertz"} {
		t, err := im.constTensor(in, 3+i, what)
		if err != nil {
			return nil, err
		}
		if t.Len() != 1 || !t.dtype.IsFloat() {
			return nil, fmt.Errorf("%s is %s%v, want a float scalar", what, t.dtype, t.shape)
		}
		edges[i] = t.Float64At(0)
	}
	mels, dftLength, rate := ints[0], ints[1], ints[2]
	lower, upper := edges[0], edges[1]
	if !(lower >= 0 && lower <= upper) {
		return nil, fmt.Errorf("lower_edge_hertz %v and upper_edge_hertz %v, want 0 <= lower <= upper", lower, upper)
	}
	dt, err := windowType(n)
	if err != nil {
		return nil, err
	}
	specBins := dftLength/2 + 1
	if _, err := checkedSizeLimit([]int64{int64(specBins), int64(mels)}, dt.Size(), maxFoldBytes); err != nil {
		return nil, err
	}
	toMel := func(hz float64) float64 { return 2595 * math.Log10(1+hz/700) }
	lowMel, highMel := toMel(lower), toMel(upper)
	step := (highMel - lowMel) / float64(mels+2)
	points := make([]int, mels+2)
	for i := range points {
		hz := 700 * (math.Pow(10, (float64(i)*step+lowMel)/2595) - 1)
		points[i] = int(math.Floor(float64(dftLength+1) * hz / float64(rate)))
		if points[i] < 0 || points[i] >= specBins {
			return nil, fmt.Errorf("mel point %d falls in spectrum bin %d, outside the %d bins (is upper_edge_hertz above sample_rate/2?)", i, points[i], specBins)
		}
	}
	w := make([]float64, specBins*mels)
	for i := range mels {
		left, center, right := points[i], points[i+1], points[i+2]
		if center == left {
			w[center*mels+i] = 1
		} else {
			for j := left; j <= center; j++ {
				w[j*mels+i] = float64(j-left) / float64(center-left)
			}
		}
		for j := center; j < right; j++ {
			w[j*mels+i] = float64(right-j) / float64(right-center)
		}
	}
	out := NewTensor(dt, Shape{specBins, mels})
	storeNumbers(out, w)
	return []*Value{im.constant(out)}, nil
}
