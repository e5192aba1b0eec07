package ir

import (
	"fmt"
	"math"

	"github.com/dstune/dstune/onnx"
)

// Signal-processing operators: DFT (an IR op computed in float64 through
// fftPlan, with its gradient), STFT (frames gathered, windowed and
// transformed by DFT), and HannWindow, HammingWindow, BlackmanWindow and
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

// gradRule: the DFT is linear, so the gradient is its adjoint applied to
// dy. With F the unnormalized forward transform of length n, the adjoint
// of F is n·F⁻¹ and that of the inverse (F⁻¹ = conj(F)/n) is F/n; cutting
// or zero-padding x to n becomes zero-padding or cutting back to x's
// length, keeping the first bins (RFFT) becomes zero-filling the rest
// (which the transform of the shorter dy does), and a real input takes
// the real part. The IRFFT reads each bin 0 < k < n/2 twice (itself and
// its mirrored conjugate), so its gradient is the RFFT of dy weighted 2/n
// there and 1/n at 0 and n/2.
func (op *DFT) gradRule(d *differ, c *gradCtx) error {
	dy := c.dy[0]
	if dy == nil || !c.needs(0) {
		return nil
	}
	x := c.in(0)
	r, n := len(x.Shape), op.Length
	var g *Value
	if op.OneSided && op.Inverse {
		g = d.emit1(&DFT{Axis: op.Axis, Length: n, OneSided: true}, dy)
		shape := Shape(ones(r))
		shape[op.Axis] = n/2 + 1
		w := NewTensor(dy.DType, shape)
		for k := range n/2 + 1 {
			v := 2 / float64(n)
			if k == 0 || 2*k == n {
				v = 1 / float64(n)
			}
			storeFloat(w, k, v, true, RoundUp)
		}
		g = d.binary(Mul, g, d.constant(w))
	} else {
		g = d.emit1(&DFT{Axis: op.Axis, Length: n, Inverse: !op.Inverse}, dy)
		scale := float64(n)
		if op.Inverse {
			scale = 1 / float64(n)
		}
		g = d.binary(Mul, g, d.scalar(dy.DType, scale))
	}
	g = fitAxis(d, g, op.Axis, x.Shape[op.Axis])
	if x.Shape[r-1] == 1 {
		sizes := g.Shape.Clone()
		sizes[r-1] = 1
		g = d.emit1(&Slice{Starts: make([]int, r), Steps: ones(r), Sizes: sizes}, g)
	}
	c.add(0, g)
	return nil
}

// fitAxis cuts v to size along axis, or pads it with zeros.
func fitAxis(d *differ, v *Value, axis, size int) *Value {
	have := v.Shape[axis]
	switch {
	case have > size:
		sizes := v.Shape.Clone()
		sizes[axis] = size
		return d.emit1(&Slice{Starts: make([]int, len(sizes)), Steps: ones(len(sizes)), Sizes: sizes}, v)
	case have < size:
		pad := v.Shape.Clone()
		pad[axis] = size - have
		return d.emit1(&Concat{Axis: axis}, v, d.zeros(v.DType, pad))
	}
	return v
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

// importSTFT imports the short-time Fourier transform of signal [batch,
// length, 1 or 2] as a composition: a Gather with constant indices cuts
// the frames [batch, frames, frame_length, 1 or 2] (frame f starts at
// f·frame_step; frames = (length − frame_length)/frame_step + 1), a Mul
// applies the window (input 2, frame_length values; absent: none), and a
// DFT of length frame_length along the frame axis gives [batch, frames,
// bins, 2], bins = frame_length/2+1 when onesided (the default; a real
// signal only), frame_length otherwise. Gradients reach the signal and
// the window through the composition.
func importSTFT(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 4); err != nil {
		return nil, err
	}
	x := in[0]
	if !isFloat(x.DType) {
		return nil, fmt.Errorf("signal is %s, want a float type", x.DType)
	}
	if len(x.Shape) != 3 || (x.Shape[2] != 1 && x.Shape[2] != 2) {
		return nil, fmt.Errorf("signal %v, want [batch, length, 1 or 2]", x.Shape)
	}
	step, _, err := im.scalarInt(in, 1, "frame_step")
	if err != nil {
		return nil, err
	}
	window := optIn(in, 2)
	length, haveLength, err := im.scalarInt(in, 3, "frame_length")
	if err != nil {
		return nil, err
	}
	switch {
	case window != nil && (window.DType != x.DType || len(window.Shape) != 1):
		return nil, fmt.Errorf("window is %v, want a vector of the signal's type %s", window.Type, x.DType)
	case window != nil && haveLength && window.Shape[0] != length:
		return nil, fmt.Errorf("window of %d values and frame_length %d differ", window.Shape[0], length)
	case window != nil:
		length = window.Shape[0]
	case !haveLength:
		length = x.Shape[1]
	}
	onesided, err := attrInt(n, "onesided", 1)
	if err != nil {
		return nil, err
	}
	switch {
	case step < 1 || length < 1:
		return nil, fmt.Errorf("frame_step %d and frame_length %d, want positive", step, length)
	case length > x.Shape[1]:
		return nil, fmt.Errorf("frame_length %d exceeds the signal's %d samples", length, x.Shape[1])
	case onesided != 0 && x.Shape[2] == 2:
		return nil, fmt.Errorf("onesided STFT of a complex signal (only a real signal has a one-sided spectrum)")
	}
	frames := (x.Shape[1]-length)/step + 1
	if _, err := checkedSizeLimit([]int64{int64(frames), int64(length)}, 4, maxFoldBytes); err != nil {
		return nil, fmt.Errorf("frames of the signal: %w", err)
	}
	idx := NewTensor(Int32, Shape{frames, length})
	for f := range frames {
		for t := range length {
			idx.Int32s()[f*length+t] = int32(f*step + t)
		}
	}
	v, err := im.emit1(&Gather{Axis: 1}, x, im.constant(idx))
	if err != nil {
		return nil, err
	}
	if window != nil {
		w, err := im.reshape(window, Shape{1, 1, length, 1})
		if err != nil {
			return nil, err
		}
		if v, err = im.emit1(&Binary{Fn: Mul}, v, w); err != nil {
			return nil, err
		}
	}
	return one(im.emit1(&DFT{Axis: 2, Length: length, OneSided: onesided != 0}, v))
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
// mel range by num_mel_bins+2, as ONNX's reference does. The edges are read
// at import (a float initializer holding one is a constant, not a
// parameter; see Model.convertInitializers): the matrix is a constant.
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
		t, err := im.importValue(in, 3+i, what)
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
