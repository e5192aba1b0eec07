package ir

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"

	"github.com/dstune/dstune/onnx"
)

// The operators that generate tensors rather than transform them:
// EyeLike (a constant: it depends only on its input's static shape),
// OneHot (Equal against an iota, then Where), and the random ones,
// RandomUniform, RandomNormal, their *Like forms and Bernoulli, drawn
// from a seeded generator so that every run of a graph gives the same
// values.

func init() {
	for name, f := range map[string]importFunc{
		"EyeLike":           importEyeLike,
		"OneHot":            importOneHot,
		"RandomUniform":     importRandom(false, false),
		"RandomNormal":      importRandom(true, false),
		"RandomUniformLike": importRandom(false, true),
		"RandomNormalLike":  importRandom(true, true),
		"Bernoulli":         importBernoulli,
	} {
		registerOp("", name, f)
	}
	registerStaticOperands("", "OneHot", 1)
}

// dtypeAttr reads an optional data type attribute (def when absent).
func dtypeAttr(n *onnx.Node, name string, def DType) (DType, error) {
	if n.Attr(name) == nil {
		return def, nil
	}
	code, err := n.AttrInt(name, 0)
	if err != nil {
		return InvalidDType, err
	}
	dt, err := DTypeFromONNX(onnx.DataType(code))
	if err != nil {
		return InvalidDType, fmt.Errorf("%w: %s %s=%v: %w", ErrNotSupported, n.OpType, name, onnx.DataType(code), err)
	}
	return dt, nil
}

// ---------------------------------------------------------------- EyeLike

func importEyeLike(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if len(x.Shape) != 2 {
		return nil, fmt.Errorf("EyeLike of rank %d, want a 2-D input", len(x.Shape))
	}
	dt, err := dtypeAttr(n, "dtype", x.DType)
	if err != nil {
		return nil, err
	}
	if !dt.computable() && dt != Bool {
		return nil, fmt.Errorf("EyeLike to %s, want a number type or bool", dt)
	}
	k, err := attrInt(n, "k", 0)
	if err != nil {
		return nil, err
	}
	if err := checkShape(x.Shape, dt.Size(), maxFoldBytes); err != nil {
		return nil, err
	}
	y := NewTensor(dt, x.Shape)
	rows, cols := x.Shape[0], x.Shape[1]
	for i := range rows {
		if j := i + k; j >= 0 && j < cols {
			storeFloat(y, i*cols+j, 1, true, RoundUp)
		}
	}
	return []*Value{im.constant(y)}, nil
}

// ---------------------------------------------------------------- OneHot

// importOneHot: out[..., d, ...] (d at axis) is values[1] where the index
// (negative ones counting from depth) equals d, values[0] elsewhere,
// indices outside [-depth, depth) giving a row of values[0]. Float
// indices are truncated, as a cast to int64.
func importOneHot(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 3, 3); err != nil {
		return nil, err
	}
	indices, values := in[0], in[2]
	dt, err := im.constTensor(in, 1, "depth")
	if err != nil {
		return nil, err
	}
	if dt.Len() != 1 || !dt.dtype.computable() {
		return nil, fmt.Errorf("depth is %s%v, want one number", dt.dtype, dt.shape)
	}
	fd := dt.Float64At(0)
	if !(fd >= 1) || fd > math.MaxInt32 {
		return nil, fmt.Errorf("depth %g, want a positive count", fd)
	}
	depth := int(fd)
	if values.Shape.Size() != 2 || len(values.Shape) != 1 {
		return nil, fmt.Errorf("values has shape %v, want [2] (off, on)", values.Shape)
	}
	if !indices.DType.computable() {
		return nil, fmt.Errorf("indices are %s, want a number type", indices.DType)
	}
	r := len(indices.Shape) + 1
	axis, err := attrAxis(n, -1, r)
	if err != nil {
		return nil, err
	}
	outShape := make(Shape, 0, r)
	outShape = append(outShape, indices.Shape[:axis]...)
	outShape = append(outShape, depth)
	outShape = append(outShape, indices.Shape[axis:]...)
	if err := checkShape(outShape, values.DType.Size(), maxTensorBytes); err != nil {
		return nil, err
	}
	idx := indices
	if idx.DType != Int64 {
		if idx, err = im.emit1(&Cast{To: Int64}, idx); err != nil {
			return nil, err
		}
	}
	negative, err := mathBinary(im, Less, idx, im.constant(ScalarInt64(0)))
	if err != nil {
		return nil, err
	}
	wrapped, err := mathBinary(im, Add, idx, im.constant(ScalarInt64(int64(depth))))
	if err != nil {
		return nil, err
	}
	if idx, err = im.emit1(&Where{}, negative, wrapped, idx); err != nil {
		return nil, err
	}
	spread := outShape.Clone()
	spread[axis] = 1
	if idx, err = im.reshape(idx, spread); err != nil {
		return nil, err
	}
	hit, err := mathBinary(im, Equal, idx, im.constant(iotaAlong(r, axis, depth)))
	if err != nil {
		return nil, err
	}
	off, err := im.emit1(&Gather{}, values, im.constant(ScalarInt64(0)))
	if err != nil {
		return nil, err
	}
	on, err := im.emit1(&Gather{}, values, im.constant(ScalarInt64(1)))
	if err != nil {
		return nil, err
	}
	return one(im.emit1(&Where{}, hit, on, off))
}

// ---------------------------------------------------------------- random

// randomSeed is the generator seed of a random node: its seed attribute's
// bits, or, without one, a hash of the node's first output name, so that
// a graph gives the same values on every run while two unseeded nodes
// differ.
func randomSeed(n *onnx.Node) (uint64, error) {
	if n.Attr("seed") != nil {
		s, err := n.AttrFloat("seed", 0)
		if err != nil {
			return 0, err
		}
		return math.Float64bits(float64(s)), nil
	}
	h := fnv.New64a()
	h.Write([]byte(n.OpType))
	if len(n.Outputs) > 0 {
		h.Write([]byte(n.Outputs[0]))
	}
	return h.Sum64(), nil
}

// randomStream is the generator a random op draws from.
func randomStream(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0xda3e39cb94b95bdb))
}

// emitUnfolded adds op as a node even when its inputs are constants (or
// it has none): a random op is drawn when the graph runs, never at
// import.
func (im *importer) emitUnfolded(op Op, in ...*Value) ([]*Value, error) {
	types := make([]Type, len(in))
	for i, v := range in {
		types[i] = v.Type
	}
	outTypes, err := op.Infer(types)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op.Name(), err)
	}
	for i, t := range outTypes {
		if err := checkShape(t.Shape, t.DType.Size(), maxTensorBytes); err != nil {
			return nil, fmt.Errorf("%s: output %d: %w", op.Name(), i, err)
		}
	}
	node := &Node{Name: im.node.Name, Op: op, Inputs: in, Origin: im.origin}
	outs := make([]*Value, len(outTypes))
	for i, t := range outTypes {
		outs[i] = im.newValue(t)
		outs[i].Producer = node
	}
	node.Outputs = outs
	im.g.Nodes = append(im.g.Nodes, node)
	return outs, nil
}

func importRandom(normal, like bool) importFunc {
	return func(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
		op := &Random{Normal: normal}
		var err error
		if like {
			if err := wantIn(in, 1, 1); err != nil {
				return nil, err
			}
			op.Shape = in[0].Shape.Clone()
			if op.DType, err = dtypeAttr(n, "dtype", in[0].DType); err != nil {
				return nil, err
			}
		} else {
			if err := wantIn(in, 0, 0); err != nil {
				return nil, err
			}
			dims, ok, err := attrInts(n, "shape")
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%s needs the attribute shape", n.OpType)
			}
			for _, d := range dims {
				if d < 0 {
					return nil, fmt.Errorf("%s shape %v has a negative dimension", n.OpType, dims)
				}
			}
			op.Shape = Shape(dims)
			if op.DType, err = dtypeAttr(n, "dtype", Float32); err != nil {
				return nil, err
			}
		}
		a, b := "low", "high"
		defA, defB := float32(0), float32(1)
		if normal {
			a, b = "mean", "scale"
		}
		lo, err := n.AttrFloat(a, defA)
		if err != nil {
			return nil, err
		}
		hi, err := n.AttrFloat(b, defB)
		if err != nil {
			return nil, err
		}
		op.A, op.B = float64(lo), float64(hi)
		if op.Seed, err = randomSeed(n); err != nil {
			return nil, err
		}
		return im.emitUnfolded(op)
	}
}

func importBernoulli(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	dt, err := dtypeAttr(n, "dtype", in[0].DType)
	if err != nil {
		return nil, err
	}
	seed, err := randomSeed(n)
	if err != nil {
		return nil, err
	}
	return im.emitUnfolded(&Bernoulli{DType: dt, Seed: seed}, in[0])
}

// Random fills a tensor of DType and Shape with independent draws from
// the uniform distribution on [A, B) (Normal false: A is low, B high;
// rounding to DType may reach B) or
// the normal one with mean A and standard deviation B, from a PCG
// generator seeded with Seed: the same values on every run, on every
// backend (which call Eval).
type Random struct {
	Normal bool
	DType  DType
	Shape  Shape
	A, B   float64
	Seed   uint64
}

func (op *Random) Name() string {
	if op.Normal {
		return "RandomNormal"
	}
	return "RandomUniform"
}

func (op *Random) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 0, 0); err != nil {
		return nil, err
	}
	if !isFloat(op.DType) {
		return nil, fmt.Errorf("dtype %s, want a float type", op.DType)
	}
	if !op.Normal && !(op.A <= op.B) {
		return nil, fmt.Errorf("low %g > high %g", op.A, op.B)
	}
	if op.Normal && !(op.B >= 0) {
		return nil, fmt.Errorf("scale %g, want >= 0", op.B)
	}
	return []Type{{op.DType, op.Shape.Clone()}}, nil
}

func (op *Random) Eval(in, out []*Tensor) error {
	rng := randomStream(op.Seed)
	y := out[0]
	for i := range y.Len() {
		var v float64
		if op.Normal {
			v = op.A + op.B*rng.NormFloat64()
		} else {
			v = op.A + (op.B-op.A)*rng.Float64()
		}
		storeFloat(y, i, v, true, RoundUp)
	}
	return nil
}

// Bernoulli draws out[i] = 1 with probability p[i] (the input, clamped to
// [0, 1]) and 0 otherwise, as DType, from a PCG generator seeded with
// Seed: the same draws on every run.
type Bernoulli struct {
	DType DType
	Seed  uint64
}

func (op *Bernoulli) Name() string { return "Bernoulli" }

func (op *Bernoulli) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	if err := wantDTypes("input", in[0], isFloat, "a float type"); err != nil {
		return nil, err
	}
	if !op.DType.computable() && op.DType != Bool {
		return nil, fmt.Errorf("dtype %s, want a number type or bool", op.DType)
	}
	return []Type{{op.DType, in[0].Shape}}, nil
}

func (op *Bernoulli) Eval(in, out []*Tensor) error {
	rng := randomStream(op.Seed)
	p, y := in[0], out[0]
	for i := range y.Len() {
		if rng.Float64() < p.Float64At(i) {
			storeFloat(y, i, 1, true, RoundUp)
		} else {
			storeFloat(y, i, 0, true, RoundUp)
		}
	}
	return nil
}

// gradRule: sampling has no derivative; the probabilities get none.
func (op *Bernoulli) gradRule(d *differ, c *gradCtx) error { return nil }
