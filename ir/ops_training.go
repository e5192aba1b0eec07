package ir

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// The ai.onnx.preview.training domain: the optimizers Adam, Adagrad and
// Momentum as compositions of element-wise ops (their update rules as
// the ONNX operator documentation writes them), and Gradient through
// Grad.

const trainingDomain = "ai.onnx.preview.training"

func init() {
	registerOp(trainingDomain, "Adam", importAdam)
	registerOp(trainingDomain, "Adagrad", importAdagrad)
	registerOp(trainingDomain, "Momentum", importMomentum)
	registerOp(trainingDomain, "Gradient", importGradient)
}

// arith emits element-wise arithmetic in one float dtype, keeping the
// first error (so that formulas read as formulas).
type arith struct {
	im  *importer
	dt  DType
	err error
}

func (a *arith) c(v float64) *Value { return a.im.constant(filled(a.dt, Shape{}, v)) }

func (a *arith) bin(fn BinaryFn, x, y *Value) *Value {
	if a.err != nil {
		return nil
	}
	v, err := a.im.emit1(&Binary{Fn: fn}, x, y)
	a.err = err
	return v
}

func (a *arith) add(x, y *Value) *Value { return a.bin(Add, x, y) }
func (a *arith) sub(x, y *Value) *Value { return a.bin(Sub, x, y) }
func (a *arith) mul(x, y *Value) *Value { return a.bin(Mul, x, y) }
func (a *arith) div(x, y *Value) *Value { return a.bin(Div, x, y) }

func (a *arith) sqrt(x *Value) *Value {
	if a.err != nil {
		return nil
	}
	v, err := a.im.emit1(&Unary{Fn: Sqrt}, x)
	a.err = err
	return v
}

// as converts x to the arithmetic's dtype.
func (a *arith) as(x *Value) *Value {
	if a.err != nil || x.DType == a.dt {
		return x
	}
	v, err := a.im.emit1(&Cast{To: a.dt, Saturate: true}, x)
	a.err = err
	return v
}

// where is cond ? x : y.
func (a *arith) where(cond, x, y *Value) *Value {
	if a.err != nil {
		return nil
	}
	v, err := a.im.emit1(&Where{}, cond, x, y)
	a.err = err
	return v
}

// optimizerInputs checks an optimizer's inputs: R (float scalar), T
// (int64 scalar), then groups of per-tensor inputs (X..., G..., ...);
// it returns the arithmetic, R and T as scalars of X's dtype, T > 0, and
// the number of tensors optimized.
func optimizerInputs(im *importer, in []*Value, groups int) (*arith, *Value, *Value, *Value, int, error) {
	if len(in) < 2+groups || (len(in)-2)%groups != 0 {
		return nil, nil, nil, nil, 0, fmt.Errorf("want R, T and %d groups of as many tensors, got %d inputs", groups, len(in))
	}
	for i, v := range in {
		if err := wantTensor(v, fmt.Sprintf("input %d", i)); err != nil {
			return nil, nil, nil, nil, 0, err
		}
	}
	r, t := in[0], in[1]
	if !isFloat(r.DType) || r.Shape.Size() != 1 {
		return nil, nil, nil, nil, 0, fmt.Errorf("R is %v, want one float", r.Type)
	}
	if t.DType != Int64 || t.Shape.Size() != 1 {
		return nil, nil, nil, nil, 0, fmt.Errorf("T is %v, want one int64", t.Type)
	}
	count := (len(in) - 2) / groups
	dt := in[2].DType
	if !isFloat(dt) {
		return nil, nil, nil, nil, 0, fmt.Errorf("X is %s, want a float type", dt)
	}
	for i := 2; i < len(in); i++ {
		if in[i].DType != dt {
			return nil, nil, nil, nil, 0, fmt.Errorf("input %d is %s, input 2 %s", i, in[i].DType, dt)
		}
		if first := in[2+(i-2)%count]; !in[i].Shape.Equal(first.Shape) {
			return nil, nil, nil, nil, 0, fmt.Errorf("input %d has shape %v, the tensor it belongs to %v", i, in[i].Shape, first.Shape)
		}
	}
	a := &arith{im: im, dt: dt}
	rs, err := im.reshape(r, Shape{})
	if err != nil {
		return nil, nil, nil, nil, 0, err
	}
	ts, err := im.reshape(t, Shape{})
	if err != nil {
		return nil, nil, nil, nil, 0, err
	}
	positive, err := im.emit1(&Binary{Fn: Greater}, ts, im.constant(ScalarInt64(0)))
	if err != nil {
		return nil, nil, nil, nil, 0, err
	}
	return a, a.as(rs), a.as(ts), positive, count, nil
}

// importAdam: for each tensor X with gradient G and moments V, H,
//
//	G' = norm_coefficient·X + G
//	V' = alpha·V + (1−alpha)·G'
//	H' = beta·H + (1−beta)·G'²
//	R' = T > 0 ? R·√(1−beta^T)/(1−alpha^T) : R
//	X' = (1−norm_coefficient_post)·(X − R'·V'/(√H' + epsilon))
//
// outputs X'..., V'..., H'....
func importAdam(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	a, r, t, positive, count, err := optimizerInputs(im, in, 4)
	if err != nil {
		return nil, err
	}
	var attrs [5]float32
	for i, spec := range []struct {
		name string
		def  float32
	}{{"alpha", 0.9}, {"beta", 0.999}, {"epsilon", 0}, {"norm_coefficient", 0}, {"norm_coefficient_post", 0}} {
		if attrs[i], err = n.AttrFloat(spec.name, spec.def); err != nil {
			return nil, err
		}
	}
	alpha, beta, eps, norm, post := float64(attrs[0]), float64(attrs[1]), float64(attrs[2]), float64(attrs[3]), float64(attrs[4])
	alphaT := a.bin(Pow, a.c(alpha), t)
	betaT := a.bin(Pow, a.c(beta), t)
	corrected := a.div(a.mul(r, a.sqrt(a.sub(a.c(1), betaT))), a.sub(a.c(1), alphaT))
	rAdj := a.where(positive, corrected, r)
	outs := make([]*Value, 3*count)
	for i := range count {
		x, g, v, h := in[2+i], in[2+count+i], in[2+2*count+i], in[2+3*count+i]
		gReg := a.add(a.mul(a.c(norm), x), g)
		vNew := a.add(a.mul(a.c(alpha), v), a.mul(a.c(1-alpha), gReg))
		hNew := a.add(a.mul(a.c(beta), h), a.mul(a.c(1-beta), a.mul(gReg, gReg)))
		xNew := a.sub(x, a.mul(rAdj, a.div(vNew, a.add(a.sqrt(hNew), a.c(eps)))))
		if post != 0 {
			xNew = a.mul(a.c(1-post), xNew)
		}
		outs[i], outs[count+i], outs[2*count+i] = xNew, vNew, hNew
	}
	return outs, a.err
}

// importAdagrad: for each tensor X with gradient G and accumulated
// squares H,
//
//	r  = R / (1 + T·decay_factor)
//	G' = norm_coefficient·X + G
//	H' = H + G'²
//	X' = X − r·G'/(√H' + epsilon)
//
// outputs X'..., H'....
func importAdagrad(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	a, r, t, _, count, err := optimizerInputs(im, in, 3)
	if err != nil {
		return nil, err
	}
	decay, err := n.AttrFloat("decay_factor", 0)
	if err != nil {
		return nil, err
	}
	eps, err := n.AttrFloat("epsilon", 0)
	if err != nil {
		return nil, err
	}
	norm, err := n.AttrFloat("norm_coefficient", 0)
	if err != nil {
		return nil, err
	}
	rate := a.div(r, a.add(a.c(1), a.mul(t, a.c(float64(decay)))))
	outs := make([]*Value, 2*count)
	for i := range count {
		x, g, h := in[2+i], in[2+count+i], in[2+2*count+i]
		gReg := a.add(a.mul(a.c(float64(norm)), x), g)
		hNew := a.add(h, a.mul(gReg, gReg))
		xNew := a.sub(x, a.div(a.mul(rate, gReg), a.add(a.sqrt(hNew), a.c(float64(eps)))))
		outs[i], outs[count+i] = xNew, hNew
	}
	return outs, a.err
}

// importMomentum: for each tensor X with gradient G and momentum V,
//
//	G' = norm_coefficient·X + G
//	V' = alpha·V + (T > 0 ? beta : 1)·G'
//	X' = X − R·V'                  (mode "standard")
//	X' = X − R·(G' + alpha·V')     (mode "nesterov")
//
// outputs X'..., V'....
func importMomentum(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	a, r, _, positive, count, err := optimizerInputs(im, in, 3)
	if err != nil {
		return nil, err
	}
	var attrs [3]float32
	for i, name := range []string{"alpha", "beta", "norm_coefficient"} {
		if n.Attr(name) == nil {
			return nil, fmt.Errorf("attribute %s is required", name)
		}
		if attrs[i], err = n.AttrFloat(name, 0); err != nil {
			return nil, err
		}
	}
	alpha, beta, norm := float64(attrs[0]), float64(attrs[1]), float64(attrs[2])
	mode, err := n.AttrString("mode", "")
	if err != nil {
		return nil, err
	}
	if mode != "standard" && mode != "nesterov" {
		return nil, fmt.Errorf("mode %q, want standard or nesterov", mode)
	}
	betaAdj := a.where(positive, a.c(beta), a.c(1))
	outs := make([]*Value, 2*count)
	for i := range count {
		x, g, v := in[2+i], in[2+count+i], in[2+2*count+i]
		gReg := a.add(a.mul(a.c(norm), x), g)
		vNew := a.add(a.mul(a.c(alpha), v), a.mul(betaAdj, gReg))
		step := vNew
		if mode == "nesterov" {
			step = a.add(gReg, a.mul(a.c(alpha), vNew))
		}
		outs[i], outs[count+i] = a.sub(x, a.mul(r, step)), vNew
	}
	return outs, a.err
}

// importGradient differentiates the value named by attribute y (a
// scalar computed at run time) with respect to the inputs xs (the values
// the attribute xs names) with Grad: the nodes already imported between
// them are copied into a graph whose parameters stand for the xs, its
// gradient graph is built, and that is copied back, the parameters
// replaced by the xs.
func importGradient(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	xsAttr := n.Attr("xs")
	if xsAttr == nil || xsAttr.Type != onnx.AttrStrings {
		return nil, fmt.Errorf("attribute xs (STRINGS) is required")
	}
	if len(xsAttr.Strings) != len(in) {
		return nil, fmt.Errorf("xs names %d values, the node has %d inputs", len(xsAttr.Strings), len(in))
	}
	if zs := n.Attr("zs"); zs != nil && len(zs.Strings) > 0 {
		return nil, fmt.Errorf("%w: Gradient with zs", ErrNotSupported)
	}
	yName, err := n.AttrString("y", "")
	if err != nil {
		return nil, err
	}
	y, ok := im.env[yName]
	if !ok {
		return nil, fmt.Errorf("y %q is not defined", yName)
	}
	if y.IsComposite() || !isFloat(y.DType) || y.Shape.Size() != 1 {
		return nil, fmt.Errorf("y %q is %v, want one float", yName, y)
	}
	b := NewBuilder("gradient")
	copied := map[*Value]*Value{}   // im.g value -> its copy in b
	original := map[*Value]*Value{} // b's placeholders and parameters -> im.g value
	var wrt []*Param
	for i, x := range in {
		if x == nil || x.IsComposite() || !isFloat(x.DType) {
			return nil, fmt.Errorf("input %d (%s) is not a float tensor", i, xsAttr.Strings[i])
		}
		if x.Kind == ConstValue {
			return nil, fmt.Errorf("%w: Gradient with respect to %q, a value known at import (its uses were folded)", ErrNotSupported, xsAttr.Strings[i])
		}
		if _, dup := copied[x]; dup {
			return nil, fmt.Errorf("xs names %q twice", xsAttr.Strings[i])
		}
		p := b.Param(fmt.Sprintf("x%d", i), NewTensor(x.DType, x.Shape))
		copied[x], original[p] = p, x
		wrt = append(wrt, p.Param)
	}
	// The nodes y depends on, in graph order, copied.
	needed := map[*Node]bool{}
	var mark func(v *Value)
	mark = func(v *Value) {
		if v == nil || copied[v] != nil || v.Producer == nil || needed[v.Producer] {
			return
		}
		needed[v.Producer] = true
		for _, u := range v.Producer.Inputs {
			mark(u)
		}
	}
	mark(y)
	outside := func(v *Value) *Value {
		if c, ok := copied[v]; ok {
			return c
		}
		var c *Value
		switch v.Kind {
		case ConstValue:
			c = b.Const(v.Const)
		default:
			c = b.Input(v.Name, v.DType, v.Shape)
		}
		copied[v], original[c] = c, v
		return c
	}
	for _, nd := range im.g.Nodes {
		if !needed[nd] {
			continue
		}
		ins := make([]*Value, len(nd.Inputs))
		for i, v := range nd.Inputs {
			if v != nil {
				ins[i] = outside(v)
			}
		}
		outs := b.Op(nd.Op, ins...)
		for i, v := range nd.Outputs {
			if v != nil && i < len(outs) {
				copied[v] = outs[i]
			}
		}
	}
	b.Output("y", outside(y))
	fwd, err := b.Graph()
	if err != nil {
		return nil, fmt.Errorf("Gradient: %w", err)
	}
	grads, err := Grad(fwd, "y", wrt)
	if err != nil {
		return nil, fmt.Errorf("Gradient: %w", err)
	}
	// Copy the gradient graph back: its inputs and parameters are the
	// values they stand for, its nodes are emitted anew.
	back := map[*Value]*Value{}
	for i, v := range grads.Inputs {
		back[v] = original[fwd.Inputs[i]]
	}
	for i, p := range grads.Params {
		back[p.Value] = original[fwd.Params[i].Value]
	}
	resolve := func(v *Value) *Value {
		if w, ok := back[v]; ok {
			return w
		}
		return v // a constant of the gradient graph
	}
	for _, nd := range grads.Nodes {
		ins := make([]*Value, len(nd.Inputs))
		for i, v := range nd.Inputs {
			if v != nil {
				ins[i] = resolve(v)
			}
		}
		outs, err := im.emit(nd.Op, ins...)
		if err != nil {
			return nil, fmt.Errorf("Gradient: %w", err)
		}
		for i, v := range nd.Outputs {
			if v != nil {
				back[v] = outs[i]
			}
		}
	}
	res := make([]*Value, len(in))
	for i, p := range wrt {
		for _, o := range grads.Outputs {
			if o.Name == GradPrefix+p.Name {
				res[i] = resolve(o.Value)
			}
		}
		if res[i] == nil {
			return nil, fmt.Errorf("Gradient: no gradient for %q", xsAttr.Strings[i])
		}
	}
	return res, nil
}
