package ir

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dstune/dstune/onnx"
)

// RNN, LSTM and GRU import unrolled over the (static) sequence length as
// compositions of MatMul, Add, Mul, the activations, Split, Concat and
// Where, so that every backend runs them and they are differentiable
// through their composition. The input projection of every time step is
// one MatMul over the whole sequence; each step then adds the recurrent
// MatMul of the previous hidden state and applies the gates. With
// sequence_lens, a batch entry's state stops changing after its last step
// (Where on the step's mask) and its outputs there are zero; the reverse
// direction starts each entry at its own last step the same way, its state
// staying initial until then.

func init() {
	registerOp("", "RNN", importRecurrent(rnnPlain))
	registerOp("", "LSTM", importRecurrent(rnnLSTM))
	registerOp("", "GRU", importRecurrent(rnnGRU))
}

type rnnKind uint8

const (
	rnnPlain rnnKind = iota
	rnnLSTM
	rnnGRU
)

func (k rnnKind) String() string { return [...]string{"RNN", "LSTM", "GRU"}[k] }

// gates is the number of gate blocks in W, R and B.
func (k rnnKind) gates() int { return [...]int{1, 4, 3}[k] }

// activations is the number of activation functions per direction and
// their defaults.
func (k rnnKind) activations() []string {
	return [][]string{{"Tanh"}, {"Sigmoid", "Tanh", "Tanh"}, {"Sigmoid", "Tanh"}}[k]
}

// split cuts v along axis into parts of the given sizes (v itself for
// one part). The slice is the caller's to change.
func (c *composer) split(v *Value, axis int, sizes ...int) []*Value {
	if c.err != nil {
		return nil
	}
	if len(sizes) == 1 {
		return []*Value{v}
	}
	return slices.Clone(c.ops(&Split{Axis: axis, Sizes: sizes}, v))
}

// rnnActivation is one activation function with its alpha and beta.
type rnnActivation struct {
	name        string // lower case
	alpha, beta float32
}

// rnnActivationDefaults lists the activations ONNX's recurrent ops take,
// with their default alpha and beta (NaN: the function takes none).
var rnnActivationDefaults = map[string][2]float32{
	"relu": {nan32, nan32}, "tanh": {nan32, nan32}, "sigmoid": {nan32, nan32},
	"affine": {1, 0}, "leakyrelu": {0.01, nan32}, "thresholdedrelu": {1, nan32},
	"scaledtanh": {1, 1}, "hardsigmoid": {0.2, 0.5}, "elu": {1, nan32},
	"softsign": {nan32, nan32}, "softplus": {nan32, nan32},
}

var nan32 = float32(math.NaN())

func takesParam(v float32) bool { return !math.IsNaN(float64(v)) }

// rnnActivations resolves the activations attribute: names, then alpha and
// beta values consumed in order by the functions that take them (the
// defaults once a list runs out).
func rnnActivations(n *onnx.Node, kind rnnKind, dirs int) ([]rnnActivation, error) {
	per := kind.activations()
	var names []string
	if a := n.Attr("activations"); a != nil {
		if a.Type != onnx.AttrStrings {
			return nil, fmt.Errorf("activations is %s, want STRINGS", a.Type)
		}
		for _, s := range a.Strings {
			names = append(names, string(s))
		}
		if len(names) != len(per)*dirs {
			return nil, fmt.Errorf("%d activations, want %d for %d direction(s)", len(names), len(per)*dirs, dirs)
		}
	} else {
		for range dirs {
			names = append(names, per...)
		}
	}
	alphas, err := n.AttrFloats("activation_alpha", nil)
	if err != nil {
		return nil, err
	}
	betas, err := n.AttrFloats("activation_beta", nil)
	if err != nil {
		return nil, err
	}
	acts := make([]rnnActivation, len(names))
	for i, name := range names {
		lower := strings.ToLower(name)
		def, ok := rnnActivationDefaults[lower]
		if !ok {
			return nil, fmt.Errorf("activation %q, want one of Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus", name)
		}
		a := rnnActivation{name: lower, alpha: def[0], beta: def[1]}
		if takesParam(a.alpha) && len(alphas) > 0 {
			a.alpha, alphas = alphas[0], alphas[1:]
		}
		if takesParam(a.beta) && len(betas) > 0 {
			a.beta, betas = betas[0], betas[1:]
		}
		acts[i] = a
	}
	return acts, nil
}

// apply emits the activation of x, after clipping x to [-clip, clip] when
// clip is set.
func (a rnnActivation) apply(c *composer, x, clip *Value) *Value {
	dt := x.DType
	if clip != nil {
		x = c.op(&Clip{}, x, c.unary(Neg, clip), clip)
	}
	switch a.name {
	case "relu":
		return c.unary(Relu, x)
	case "tanh":
		return c.unary(Tanh, x)
	case "sigmoid":
		return c.unary(Sigmoid, x)
	case "softplus":
		return c.unary(Softplus, x)
	case "leakyrelu":
		return c.op(&Unary{Fn: LeakyRelu, Alpha: a.alpha}, x)
	case "elu":
		return c.op(&Unary{Fn: Elu, Alpha: a.alpha}, x)
	case "affine":
		return c.binary(Add, c.binary(Mul, x, c.scalar(dt, float64(a.alpha))), c.scalar(dt, float64(a.beta)))
	case "thresholdedrelu":
		return c.op(&Where{}, c.binary(Greater, x, c.scalar(dt, float64(a.alpha))), x, c.scalar(dt, 0))
	case "scaledtanh":
		return c.binary(Mul, c.unary(Tanh, c.binary(Mul, x, c.scalar(dt, float64(a.beta)))), c.scalar(dt, float64(a.alpha)))
	case "hardsigmoid":
		lin := c.binary(Add, c.binary(Mul, x, c.scalar(dt, float64(a.alpha))), c.scalar(dt, float64(a.beta)))
		return c.op(&Clip{}, lin, c.scalar(dt, 0), c.scalar(dt, 1))
	default: // softsign
		return c.binary(Div, x, c.binary(Add, c.unary(Abs, x), c.scalar(dt, 1)))
	}
}

// recurrence holds what one direction's unrolling needs.
type recurrence struct {
	c                 *composer
	kind              rnnKind
	steps, batch      int
	hidden            int
	acts              []rnnActivation // this direction's
	clip              *Value
	inputForget       bool
	linearBeforeReset bool
	// mask returns the [batch, 1] mask of the entries still running at
	// step t (nil without sequence_lens).
	mask func(t int) *Value
}

// directionParams are one direction's weights, already laid out for the
// unrolling: W and R transposed, biases summed where they can be.
type directionParams struct {
	wT, rT   *Value // [input, G·hidden], [hidden, G·hidden]
	rhT      *Value // GRU: Rh transposed [hidden, hidden]; rT then holds Rz, Rr only
	bias     *Value // added to the input projection [G·hidden], or nil
	rbh      *Value // GRU with linear_before_reset: Rbh [hidden]
	peep     []*Value
	h0, c0   *Value // [batch, hidden]
	reversed bool
}

// unroll runs one direction over the projected inputs xs (one [batch,
// G·hidden] value per time step) and returns the output of every step (in
// time order) and the final hidden and cell states.
func (r *recurrence) unroll(p *directionParams, xs []*Value) (ys []*Value, h, cell *Value) {
	c := r.c
	ys = make([]*Value, r.steps)
	h, cell = p.h0, p.c0
	zero := c.scalar(p.h0.DType, 0)
	for i := range r.steps {
		t := i
		if p.reversed {
			t = r.steps - 1 - i
		}
		var hn, cn *Value
		switch r.kind {
		case rnnPlain:
			hn = r.acts[0].apply(c, c.binary(Add, xs[t], c.op(&MatMul{}, h, p.rT)), r.clip)
		case rnnLSTM:
			hn, cn = r.lstmStep(p, xs[t], h, cell)
		case rnnGRU:
			hn = r.gruStep(p, xs[t], h)
		}
		if r.mask != nil {
			m := r.mask(t)
			ys[t] = c.op(&Where{}, m, hn, zero)
			h = c.op(&Where{}, m, hn, h)
			if cn != nil {
				cell = c.op(&Where{}, m, cn, cell)
			}
		} else {
			ys[t], h, cell = hn, hn, cn
		}
		if c.err != nil {
			return nil, nil, nil
		}
	}
	return ys, h, cell
}

// lstmStep is one LSTM step: gates i, o, f and the candidate c from the
// projected input x and the recurrent h·Rᵀ, peepholes onto the cell
// state, the new cell state f⊙cell + i⊙c and hidden state o⊙h(cell).
func (r *recurrence) lstmStep(p *directionParams, x, h, cell *Value) (hn, cn *Value) {
	c, hs := r.c, r.hidden
	dt := x.DType
	g := c.split(c.binary(Add, x, c.op(&MatMul{}, h, p.rT)), 1, hs, hs, hs, hs)
	if g == nil {
		return nil, nil
	}
	iPre, oPre, fPre, cPre := g[0], g[1], g[2], g[3]
	if p.peep != nil {
		iPre = c.binary(Add, iPre, c.binary(Mul, p.peep[0], cell))
		fPre = c.binary(Add, fPre, c.binary(Mul, p.peep[2], cell))
	}
	in := r.acts[0].apply(c, iPre, r.clip)
	var forget *Value
	if r.inputForget {
		forget = c.binary(Sub, c.scalar(dt, 1), in)
	} else {
		forget = r.acts[0].apply(c, fPre, r.clip)
	}
	cand := r.acts[1].apply(c, cPre, r.clip)
	cn = c.binary(Add, c.binary(Mul, forget, cell), c.binary(Mul, in, cand))
	if p.peep != nil {
		oPre = c.binary(Add, oPre, c.binary(Mul, p.peep[1], cn))
	}
	out := r.acts[0].apply(c, oPre, r.clip)
	return c.binary(Mul, out, r.acts[2].apply(c, cn, nil)), cn
}

// gruStep is one GRU step: update gate z and reset gate r, the candidate
// from the reset hidden state (reset before the recurrent product, or
// after it with linear_before_reset), and (1-z)⊙candidate + z⊙h.
func (r *recurrence) gruStep(p *directionParams, x, h *Value) *Value {
	c, hs := r.c, r.hidden
	gx := c.split(x, 1, hs, hs, hs)
	var gh []*Value
	if r.linearBeforeReset {
		gh = c.split(c.op(&MatMul{}, h, p.rT), 1, hs, hs, hs)
	} else {
		gh = c.split(c.op(&MatMul{}, h, p.rT), 1, hs, hs)
	}
	if gx == nil || gh == nil {
		return nil
	}
	z := r.acts[0].apply(c, c.binary(Add, gx[0], gh[0]), r.clip)
	reset := r.acts[0].apply(c, c.binary(Add, gx[1], gh[1]), r.clip)
	var candPre *Value
	if r.linearBeforeReset {
		hh := gh[2]
		if p.rbh != nil {
			hh = c.binary(Add, hh, p.rbh)
		}
		candPre = c.binary(Add, gx[2], c.binary(Mul, reset, hh))
	} else {
		candPre = c.binary(Add, gx[2], c.op(&MatMul{}, c.binary(Mul, reset, h), p.rhT))
	}
	cand := r.acts[1].apply(c, candPre, r.clip)
	return c.binary(Add, cand, c.binary(Mul, z, c.binary(Sub, h, cand)))
}

// recurrentAttrs are a recurrent node's attributes.
type recurrentAttrs struct {
	hidden, dirs      int
	reverse           bool // direction "reverse" (bidirectional runs both)
	batchFirst        bool // layout 1
	acts              []rnnActivation
	clip              float32 // 0: none
	inputForget       bool
	linearBeforeReset bool
}

func readRecurrentAttrs(n *onnx.Node, kind rnnKind) (*recurrentAttrs, error) {
	a := &recurrentAttrs{}
	var err error
	if a.hidden, err = attrInt(n, "hidden_size", 0); err != nil {
		return nil, err
	}
	if a.hidden < 1 {
		return nil, fmt.Errorf("hidden_size %d, want a positive number (it is required)", a.hidden)
	}
	direction, err := n.AttrString("direction", "forward")
	if err != nil {
		return nil, err
	}
	switch direction {
	case "forward":
		a.dirs = 1
	case "reverse":
		a.dirs, a.reverse = 1, true
	case "bidirectional":
		a.dirs = 2
	default:
		return nil, fmt.Errorf("direction %q, want forward, reverse or bidirectional", direction)
	}
	layout, err := attrInt(n, "layout", 0)
	if err != nil {
		return nil, err
	}
	if layout != 0 && layout != 1 {
		return nil, fmt.Errorf("layout %d, want 0 or 1", layout)
	}
	a.batchFirst = layout == 1
	if a.acts, err = rnnActivations(n, kind, a.dirs); err != nil {
		return nil, err
	}
	if n.Attr("clip") != nil {
		if a.clip, err = n.AttrFloat("clip", 0); err != nil {
			return nil, err
		}
		if !(a.clip > 0) {
			return nil, fmt.Errorf("clip %g, want a positive threshold", a.clip)
		}
	}
	flag := func(name string, dst *bool) error {
		v, err := attrInt(n, name, 0)
		*dst = v != 0
		return err
	}
	switch kind {
	case rnnLSTM:
		err = flag("input_forget", &a.inputForget)
	case rnnGRU:
		err = flag("linear_before_reset", &a.linearBeforeReset)
	}
	return a, err
}

// recurrentOperands are a recurrent node's inputs, checked and with the
// batch-first layout turned sequence-first (X [steps, batch, input],
// initial states [dirs, batch, hidden]); absent optional ones are nil.
type recurrentOperands struct {
	x, w, r, b, seqLens, h0, c0, peep *Value
}

func readRecurrentOperands(c *composer, kind rnnKind, a *recurrentAttrs, in []*Value) (*recurrentOperands, error) {
	opt := func(i int) *Value {
		if i < len(in) {
			return in[i]
		}
		return nil
	}
	o := &recurrentOperands{x: in[0], w: in[1], r: in[2], b: opt(3), seqLens: opt(4), h0: opt(5), c0: opt(6), peep: opt(7)}
	dt := o.x.DType
	if !isFloat(dt) || len(o.x.Shape) != 3 {
		return nil, fmt.Errorf("X is %v, want a float tensor of rank 3", o.x.Type)
	}
	if a.batchFirst {
		o.x = c.op(&Transpose{Perm: []int{1, 0, 2}}, o.x)
		if c.err != nil {
			return nil, c.err
		}
	}
	if o.x.Shape[0] == 0 {
		return nil, fmt.Errorf("X %v has no time steps", in[0].Shape)
	}
	batch, inputSize := o.x.Shape[1], o.x.Shape[2]
	g, h, d := kind.gates(), a.hidden, a.dirs
	stateShape := Shape{d, batch, h}
	if a.batchFirst {
		stateShape = Shape{batch, d, h}
	}
	for _, want := range []struct {
		what  string
		v     *Value
		shape Shape
	}{
		{"W", o.w, Shape{d, g * h, inputSize}}, {"R", o.r, Shape{d, g * h, h}}, {"B", o.b, Shape{d, 2 * g * h}},
		{"initial_h", o.h0, stateShape}, {"initial_c", o.c0, stateShape}, {"P", o.peep, Shape{d, 3 * h}},
	} {
		if want.v != nil && (want.v.DType != dt || !want.v.Shape.Equal(want.shape)) {
			return nil, fmt.Errorf("%s is %v, want %s%v", want.what, want.v.Type, dt, want.shape)
		}
	}
	if a.batchFirst {
		for _, v := range []**Value{&o.h0, &o.c0} {
			if *v != nil {
				*v = c.op(&Transpose{Perm: []int{1, 0, 2}}, *v)
			}
		}
	}
	if o.seqLens != nil && (!isIndex(o.seqLens.DType) || !o.seqLens.Shape.Equal(Shape{batch})) {
		return nil, fmt.Errorf("sequence_lens is %v, want int32[%d]", o.seqLens.Type, batch)
	}
	return o, c.err
}

// perDirection splits a [dirs, ...] operand into each direction's part
// (nil parts for an absent operand).
func (c *composer) perDirection(v *Value, dirs int) []*Value {
	if v == nil {
		return make([]*Value, dirs)
	}
	parts := []*Value{v}
	if dirs == 2 {
		if parts = c.split(v, 0, 1, 1); parts == nil {
			return make([]*Value, dirs)
		}
	}
	for i, p := range parts {
		parts[i] = c.reshape(p, p.Shape[1:])
	}
	return parts
}

// params lays out one direction's weights for the unrolling: W and R
// transposed (GRU without linear_before_reset keeps Rh apart), the biases
// that add to the input projection summed, and the initial states (zeros
// when absent).
func (r *recurrence) params(w, rw, b, peep, h0, c0 *Value, reversed bool) *directionParams {
	c, hs, g := r.c, r.hidden, r.kind.gates()
	dt := w.DType
	zeros := c.im.constant(filled(dt, Shape{r.batch, hs}, 0))
	p := &directionParams{h0: h0, c0: c0, reversed: reversed}
	if p.h0 == nil {
		p.h0 = zeros
	}
	if r.kind == rnnLSTM && p.c0 == nil {
		p.c0 = zeros
	}
	transpose := func(v *Value) *Value { return c.op(&Transpose{Perm: []int{1, 0}}, v) }
	p.wT = transpose(w)
	if r.kind == rnnGRU && !r.linearBeforeReset {
		if parts := c.split(rw, 0, 2*hs, hs); parts != nil {
			p.rT, p.rhT = transpose(parts[0]), transpose(parts[1])
		}
	} else {
		p.rT = transpose(rw)
	}
	if b != nil {
		if wrb := c.split(b, 0, g*hs, g*hs); wrb != nil {
			if r.kind == rnnGRU && r.linearBeforeReset {
				// Rbh stays inside the reset gate's product.
				if rb := c.split(wrb[1], 0, 2*hs, hs); rb != nil {
					p.rbh = rb[1]
					p.bias = c.binary(Add, wrb[0], c.concat(0, rb[0], c.im.constant(filled(dt, Shape{hs}, 0))))
				}
			} else {
				p.bias = c.binary(Add, wrb[0], wrb[1])
			}
		}
	}
	if peep != nil {
		p.peep = c.split(peep, 0, hs, hs, hs)
	}
	return p
}

// project computes the input projection x·Wᵀ (+ bias) of every step at
// once and returns each step's [batch, G·hidden] part.
func (r *recurrence) project(p *directionParams, xFlat *Value) []*Value {
	c, g := r.c, r.kind.gates()
	proj := c.op(&MatMul{}, xFlat, p.wT)
	if p.bias != nil {
		proj = c.binary(Add, proj, p.bias)
	}
	proj = c.reshape(proj, Shape{r.steps, r.batch, g * r.hidden})
	sizes := make([]int, r.steps)
	for i := range sizes {
		sizes[i] = 1
	}
	xs := c.split(proj, 0, sizes...)
	for i, v := range xs {
		xs[i] = c.reshape(v, Shape{r.batch, g * r.hidden})
	}
	return xs
}

func importRecurrent(kind rnnKind) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		maxIn := 6
		if kind == rnnLSTM {
			maxIn = 8
		}
		if err := wantIn(in, 3, maxIn); err != nil {
			return nil, err
		}
		a, err := readRecurrentAttrs(n, kind)
		if err != nil {
			return nil, err
		}
		c := &composer{im: im}
		o, err := readRecurrentOperands(c, kind, a, in)
		if err != nil {
			return nil, err
		}
		steps, batch := o.x.Shape[0], o.x.Shape[1]
		r := &recurrence{c: c, kind: kind, steps: steps, batch: batch, hidden: a.hidden,
			inputForget: a.inputForget, linearBeforeReset: a.linearBeforeReset}
		if a.clip > 0 {
			r.clip = c.scalar(o.x.DType, float64(a.clip))
		}
		if o.seqLens != nil {
			if r.mask, err = sequenceMask(c, o.seqLens, steps); err != nil {
				return nil, err
			}
		}
		xFlat := c.reshape(o.x, Shape{steps * batch, o.x.Shape[2]})
		d := a.dirs
		ws, rs, bs := c.perDirection(o.w, d), c.perDirection(o.r, d), c.perDirection(o.b, d)
		h0s, c0s, ps := c.perDirection(o.h0, d), c.perDirection(o.c0, d), c.perDirection(o.peep, d)
		per := len(kind.activations())
		var ys, hs, cs []*Value
		for dir := range d {
			if c.err != nil {
				return nil, c.err
			}
			r.acts = a.acts[dir*per : (dir+1)*per]
			p := r.params(ws[dir], rs[dir], bs[dir], ps[dir], h0s[dir], c0s[dir], a.reverse || dir == 1)
			xs := r.project(p, xFlat)
			if c.err != nil {
				return nil, c.err
			}
			dy, dh, dc := r.unroll(p, xs)
			if c.err != nil {
				return nil, c.err
			}
			for i, v := range dy {
				dy[i] = c.reshape(v, Shape{1, 1, batch, a.hidden})
			}
			ys = append(ys, c.concat(0, dy...))
			hs = append(hs, c.reshape(dh, Shape{1, batch, a.hidden}))
			if dc != nil {
				cs = append(cs, c.reshape(dc, Shape{1, batch, a.hidden}))
			}
		}
		outs := []*Value{c.concat(1, ys...), c.concat(0, hs...)}
		if kind == rnnLSTM {
			outs = append(outs, c.concat(0, cs...))
		}
		if a.batchFirst {
			outs[0] = c.op(&Transpose{Perm: []int{2, 0, 1, 3}}, outs[0])
			for i := 1; i < len(outs); i++ {
				outs[i] = c.op(&Transpose{Perm: []int{1, 0, 2}}, outs[i])
			}
		}
		if c.err != nil {
			return nil, c.err
		}
		return outs, nil
	}
}

// sequenceMask returns the function giving, for step t, the [batch, 1]
// bool mask t < sequence_lens. Constant lengths are checked and fold; when
// every length is the whole sequence there is no mask at all.
func sequenceMask(c *composer, lens *Value, steps int) (func(int) *Value, error) {
	if lens.Kind == ConstValue {
		full := true
		for _, l := range lens.Const.Ints() {
			if l < 0 || l > steps {
				return nil, fmt.Errorf("sequence_lens %v, want lengths in [0, %d]", lens.Const.Ints(), steps)
			}
			if l != steps {
				full = false
			}
		}
		if full {
			return nil, nil
		}
	}
	batch := lens.Shape[0]
	return func(t int) *Value {
		step := NewTensor(lens.DType, Shape{})
		storeInt(step, 0, int64(t), true, RoundUp)
		return c.reshape(c.binary(Less, c.im.constant(step), lens), Shape{batch, 1})
	}, nil
}
