package ir

import (
	"fmt"
	"slices"

	"github.com/dstune/dstune/onnx"
)

// Control flow: If, Loop and Scan. The IR has no control flow; import
// resolves it. An If whose condition is known imports its branch; one
// whose condition is computed at run time imports both and selects each
// output with Where. Loop and Scan are unrolled: the body is imported
// once per iteration with the loop-carried values threaded through, and
// the scan outputs are stacked. A Loop's trip count and condition must
// therefore be known at import (ValueInputs binds what they depend on).

func init() {
	registerOp("", "If", importIf)
	registerOp("", "Loop", importLoop)
	registerOp("", "Scan", importScan)
	registerStaticOperands("", "If", 0)
	registerStaticOperands("", "Loop", 0, 1)
	registerTakesComposites("", "If", "Loop", "Scan", "Identity")
}

// importIf imports the branch the condition selects, or both branches
// and Where between their outputs when the condition is computed at run
// time (the branches must then give outputs of the same types).
func importIf(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	cond := in[0]
	if cond.IsComposite() {
		return nil, fmt.Errorf("cond is %s, want a bool tensor", compositeKindName(cond))
	}
	if cond.DType != Bool || cond.Shape.Size() != 1 {
		return nil, fmt.Errorf("cond is %v, want a bool tensor of one element", cond.Type)
	}
	thenG, err := n.AttrGraph("then_branch")
	if err != nil {
		return nil, err
	}
	elseG, err := n.AttrGraph("else_branch")
	if err != nil {
		return nil, err
	}
	// Both branches must be there and give the If's outputs, one for one,
	// even when only one is imported (ONNX requires it; a surplus output
	// would otherwise be dropped unseen).
	switch {
	case thenG == nil:
		return nil, fmt.Errorf("no then_branch")
	case elseG == nil:
		return nil, fmt.Errorf("no else_branch")
	case len(thenG.Outputs) != len(n.Outputs) || len(elseG.Outputs) != len(n.Outputs):
		return nil, fmt.Errorf("then_branch has %d outputs and else_branch %d, want %d each (the If's outputs)", len(thenG.Outputs), len(elseG.Outputs), len(n.Outputs))
	}
	if cond.Kind == ConstValue {
		if cond.Const.Int64At(0) != 0 {
			return im.subgraph(branchSubgraph, "then_branch", thenG, nil, "")
		}
		return im.subgraph(branchSubgraph, "else_branch", elseG, nil, "")
	}
	thenOut, err := im.subgraph(branchSubgraph, "then_branch", thenG, nil, "")
	if err != nil {
		return nil, err
	}
	elseOut, err := im.subgraph(branchSubgraph, "else_branch", elseG, nil, "")
	if err != nil {
		return nil, err
	}
	if len(thenOut) != len(elseOut) {
		return nil, fmt.Errorf("then_branch has %d outputs, else_branch %d", len(thenOut), len(elseOut))
	}
	scalar, err := im.reshape(cond, Shape{})
	if err != nil {
		return nil, err
	}
	outs := make([]*Value, len(thenOut))
	for i := range outs {
		if outs[i], err = im.selectValue(scalar, thenOut[i], elseOut[i]); err != nil {
			return nil, fmt.Errorf("%w: If with a condition computed at run time: output %d: %w", ErrNotSupported, i, err)
		}
	}
	return outs, nil
}

// selectValue is a where b: a tensor chosen by Where, or a sequence or
// optional chosen element by element (both must have the same
// structure, and tensors the same type).
func (im *importer) selectValue(cond, a, b *Value) (*Value, error) {
	if a == b {
		return a, nil
	}
	if a.Kind != b.Kind && (a.IsComposite() || b.IsComposite()) {
		return nil, fmt.Errorf("the branches give %s and %s", compositeKindName(a), compositeKindName(b))
	}
	if a.IsComposite() {
		if len(a.Elems) != len(b.Elems) {
			return nil, fmt.Errorf("the branches give %s of %d and of %d elements", compositeKindName(a), len(a.Elems), len(b.Elems))
		}
		elems := make([]*Value, len(a.Elems))
		for i := range elems {
			var err error
			if elems[i], err = im.selectValue(cond, a.Elems[i], b.Elems[i]); err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
		}
		return im.newComposite(a.Kind, elems), nil
	}
	if a.DType != b.DType || !a.Shape.Equal(b.Shape) {
		return nil, fmt.Errorf("the branches give %v and %v", a.Type, b.Type)
	}
	if a.DType == String {
		return nil, fmt.Errorf("the branches give strings, which must be known at import")
	}
	return im.emit1(&Where{}, cond, a, b)
}

// importLoop unrolls a Loop: inputs M (trip count), cond and the initial
// loop-carried values; the body maps (iteration, cond, carried...) to
// (cond, carried..., scan outputs...); the outputs are the final carried
// values and each scan output stacked over the iterations.
func importLoop(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if len(in) < 2 {
		return nil, fmt.Errorf("want at least 2 inputs (M, cond), got %d", len(in))
	}
	body, err := n.AttrGraph("body")
	if err != nil {
		return nil, err
	}
	if body == nil {
		return nil, fmt.Errorf("no body")
	}
	carried := slices.Clone(in[2:])
	nCarried := len(carried)
	for i, v := range carried {
		if v == nil {
			return nil, fmt.Errorf("loop-carried input %d is missing", 2+i)
		}
	}
	if len(body.Inputs) != 2+nCarried || len(body.Outputs) < 1+nCarried {
		return nil, fmt.Errorf("body has %d inputs and %d outputs for %d loop-carried values, want %d inputs and at least %d outputs",
			len(body.Inputs), len(body.Outputs), nCarried, 2+nCarried, 1+nCarried)
	}
	nScan := len(body.Outputs) - 1 - nCarried
	trips := int64(-1)
	if in[0] != nil {
		t, err := im.constTensor(in, 0, "M")
		if err != nil {
			return nil, fmt.Errorf("%w: Loop %q with a trip count computed at run time (%w)", ErrNotSupported, n.Name, err)
		}
		if t.Len() != 1 || !t.dtype.IsInt() {
			return nil, fmt.Errorf("M is %v, want one integer", t)
		}
		trips = max(t.Int64At(0), 0)
	}
	cond := true
	hasCond := in[1] != nil
	if hasCond {
		t, err := im.constTensor(in, 1, "cond")
		if err != nil {
			return nil, fmt.Errorf("%w: Loop %q with a condition computed at run time (%w)", ErrNotSupported, n.Name, err)
		}
		if t.Len() != 1 || t.dtype != Bool {
			return nil, fmt.Errorf("cond is %v, want one bool", t)
		}
		cond = t.Int64At(0) != 0
	}
	if trips < 0 && !hasCond {
		return nil, fmt.Errorf("Loop %q has neither a trip count nor a condition: it would never end", n.Name)
	}
	scans := make([][]*Value, nScan)
	for i := int64(0); (trips < 0 || i < trips) && cond; i++ {
		args := append([]*Value{im.constant(ScalarInt64(i)), im.constant(FromBools(Shape{}, []bool{cond}))}, carried...)
		outs, err := im.subgraph(loopSubgraph, "body", body, args, fmt.Sprintf("@%d", i))
		if err != nil {
			return nil, fmt.Errorf("iteration %d: %w", i, err)
		}
		if hasCond {
			c := outs[0]
			if c.IsComposite() || c.DType != Bool || c.Shape.Size() != 1 {
				return nil, fmt.Errorf("iteration %d: the body's condition is %v, want one bool", i, c)
			}
			if c.Kind != ConstValue {
				return nil, fmt.Errorf("%w: Loop %q: the condition the body computes in iteration %d is only known at run time (loops are unrolled at import)", ErrNotSupported, n.Name, i)
			}
			cond = c.Const.Int64At(0) != 0
		}
		copy(carried, outs[1:1+nCarried])
		for k := range scans {
			scans[k] = append(scans[k], outs[1+nCarried+k])
		}
	}
	results := carried
	for k, vals := range scans {
		what := fmt.Sprintf("scan output %d", k)
		decl := body.Outputs[1+nCarried+k]
		v, err := im.stack(vals, 0, decl, what)
		if err != nil {
			return nil, err
		}
		results = append(results, v)
	}
	return results, nil
}

// importScan unrolls a Scan: the body maps (states..., one slice of each
// scan input...) to (states..., scan output slices...); the outputs are
// the final states and the scan output slices stacked.
func importScan(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	body, err := n.AttrGraph("body")
	if err != nil {
		return nil, err
	}
	if body == nil {
		return nil, fmt.Errorf("no body")
	}
	nScanIn, err := attrInt(n, "num_scan_inputs", -1)
	if err != nil {
		return nil, err
	}
	if im.opset < 9 {
		return importScan8(im, n, in, body, nScanIn)
	}
	if nScanIn < 1 || nScanIn > len(in) {
		return nil, fmt.Errorf("num_scan_inputs %d for %d inputs", nScanIn, len(in))
	}
	for i, v := range in {
		if v == nil {
			return nil, fmt.Errorf("input %d is missing", i)
		}
		if v.IsComposite() {
			return nil, fmt.Errorf("input %d is %s, want a tensor", i, compositeKindName(v))
		}
	}
	nState := len(in) - nScanIn
	inAxes, err := scanAttr(n, "scan_input_axes", nScanIn)
	if err != nil {
		return nil, err
	}
	inDirs, err := scanAttr(n, "scan_input_directions", nScanIn)
	if err != nil {
		return nil, err
	}
	return scanSteps(im, body, in[:nState], in[nState:], inAxes, inDirs, n)
}

// scanAttr reads a per-input or per-output INTS attribute of Scan (zeros
// when absent).
func scanAttr(n *onnx.Node, name string, count int) ([]int, error) {
	v, ok, err := attrInts(n, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return make([]int, count), nil
	}
	if len(v) != count {
		return nil, fmt.Errorf("%s has %d entries, want %d", name, len(v), count)
	}
	return v, nil
}

// scanSteps runs the scan of opset 9 and later on states and scan
// inputs: the steps, then the stacked scan outputs.
func scanSteps(im *importer, body *onnx.Graph, states, scanIn []*Value, inAxes, inDirs []int, n *onnx.Node) ([]*Value, error) {
	nState := len(states)
	if len(body.Inputs) != nState+len(scanIn) || len(body.Outputs) < nState {
		return nil, fmt.Errorf("body has %d inputs and %d outputs for %d states and %d scan inputs", len(body.Inputs), len(body.Outputs), nState, len(scanIn))
	}
	nScanOut := len(body.Outputs) - nState
	outAxes, err := scanAttr(n, "scan_output_axes", nScanOut)
	if err != nil {
		return nil, err
	}
	outDirs, err := scanAttr(n, "scan_output_directions", nScanOut)
	if err != nil {
		return nil, err
	}
	steps := -1
	axes := make([]int, len(scanIn))
	for j, x := range scanIn {
		if axes[j], err = normAxis(inAxes[j], len(x.Shape)); err != nil {
			return nil, fmt.Errorf("scan input %d: %w", j, err)
		}
		if steps >= 0 && x.Shape[axes[j]] != steps {
			return nil, fmt.Errorf("scan input %d has %d steps along axis %d, an earlier one %d", j, x.Shape[axes[j]], axes[j], steps)
		}
		steps = x.Shape[axes[j]]
	}
	states = slices.Clone(states)
	scans := make([][]*Value, nScanOut)
	for t := range steps {
		args := slices.Clone(states)
		for j, x := range scanIn {
			at := t
			if inDirs[j] == 1 {
				at = steps - 1 - t
			}
			slice, err := im.take(x, axes[j], at)
			if err != nil {
				return nil, fmt.Errorf("step %d: scan input %d: %w", t, j, err)
			}
			args = append(args, slice)
		}
		outs, err := im.subgraph(loopSubgraph, "body", body, args, fmt.Sprintf("@%d", t))
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", t, err)
		}
		copy(states, outs[:nState])
		for k := range scans {
			scans[k] = append(scans[k], outs[nState+k])
		}
	}
	results := states
	for k, vals := range scans {
		if outDirs[k] == 1 {
			slices.Reverse(vals)
		}
		axis := outAxes[k]
		if len(vals) > 0 && !vals[0].IsComposite() {
			if axis, err = normAxis(axis, len(vals[0].Shape)+1); err != nil {
				return nil, fmt.Errorf("scan output %d: %w", k, err)
			}
		}
		v, err := im.stack(vals, axis, body.Outputs[nState+k], fmt.Sprintf("scan output %d", k))
		if err != nil {
			return nil, err
		}
		results = append(results, v)
	}
	return results, nil
}

// importScan8 is Scan of opset 8: inputs (sequence_lens, states...,
// scan inputs...) all with a leading batch axis, scanned along axis 1.
// Each batch entry is scanned on its own and the results stacked.
func importScan8(im *importer, n *onnx.Node, in []*Value, body *onnx.Graph, nScanIn int) ([]*Value, error) {
	if len(in) < 1+nScanIn || nScanIn < 1 {
		return nil, fmt.Errorf("num_scan_inputs %d for %d inputs", nScanIn, len(in))
	}
	states, scanIn := in[1:len(in)-nScanIn], in[len(in)-nScanIn:]
	batch := -1
	for i, v := range in[1:] {
		if v == nil || v.IsComposite() || len(v.Shape) == 0 {
			return nil, fmt.Errorf("input %d must be a tensor with a batch axis", i+1)
		}
		if batch >= 0 && v.Shape[0] != batch {
			return nil, fmt.Errorf("input %d has batch %d, an earlier one %d", i+1, v.Shape[0], batch)
		}
		batch = v.Shape[0]
	}
	dirs, err := scanAttr(n, "directions", nScanIn)
	if err != nil {
		return nil, err
	}
	for j, x := range scanIn {
		if len(x.Shape) < 2 {
			return nil, fmt.Errorf("scan input %d is %v, want [batch, steps, ...]", j, x.Type)
		}
	}
	if in[0] != nil {
		lens, _, err := im.constInts(in, 0, "sequence_lens")
		if err != nil {
			return nil, fmt.Errorf("%w: Scan with sequence lengths computed at run time (%w)", ErrNotSupported, err)
		}
		for _, l := range lens {
			if l != scanIn[0].Shape[1] {
				return nil, fmt.Errorf("%w: Scan with sequence lengths %v shorter than the inputs' %d steps", ErrNotSupported, lens, scanIn[0].Shape[1])
			}
		}
	}
	perBatch := make([][]*Value, len(body.Outputs))
	for b := range batch {
		var st, sc []*Value
		for _, v := range states {
			x, err := im.take(v, 0, b)
			if err != nil {
				return nil, err
			}
			st = append(st, x)
		}
		for _, v := range scanIn {
			x, err := im.take(v, 0, b)
			if err != nil {
				return nil, err
			}
			sc = append(sc, x)
		}
		outs, err := scanSteps(im, body, st, sc, make([]int, nScanIn), dirs, n)
		if err != nil {
			return nil, fmt.Errorf("batch %d: %w", b, err)
		}
		if len(outs) != len(perBatch) {
			return nil, fmt.Errorf("body has %d outputs, want %d", len(outs), len(perBatch))
		}
		for i, v := range outs {
			perBatch[i] = append(perBatch[i], v)
		}
	}
	results := make([]*Value, len(perBatch))
	for i, vals := range perBatch {
		var decl *onnx.ValueInfo
		if i < len(body.Outputs) {
			decl = body.Outputs[i]
		}
		v, err := im.stack(vals, 0, decl, fmt.Sprintf("output %d", i))
		if err != nil {
			return nil, err
		}
		results[i] = v
	}
	return results, nil
}

// take returns x[..., at, ...] along axis, without that axis.
func (im *importer) take(x *Value, axis, at int) (*Value, error) {
	if x.IsComposite() {
		return nil, fmt.Errorf("want a tensor, got %s", compositeKindName(x))
	}
	r := len(x.Shape)
	starts, steps, sizes := make([]int, r), ones(r), x.Shape.Clone()
	starts[axis], sizes[axis] = at, 1
	s, err := im.emit1(&Slice{Starts: starts, Steps: steps, Sizes: sizes}, x)
	if err != nil {
		return nil, err
	}
	return im.reshape(s, slices.Delete(slices.Clone(sizes), axis, axis+1))
}

// stack stacks vals along a new axis (loop and scan outputs). Without
// values the result is empty, with the element type the body declares
// (which must then be static).
func (im *importer) stack(vals []*Value, axis int, decl *onnx.ValueInfo, what string) (*Value, error) {
	if len(vals) == 0 {
		elem, err := declaredTensorType(decl)
		if err != nil {
			return nil, fmt.Errorf("%w: %s of a loop that runs no iteration: %w", ErrNotSupported, what, err)
		}
		shape := slices.Insert(elem.Shape.Clone(), min(axis, len(elem.Shape)), 0)
		return im.constant(NewTensor(elem.DType, shape)), nil
	}
	first := vals[0]
	parts := make([]*Value, len(vals))
	for i, v := range vals {
		if v.IsComposite() {
			return nil, fmt.Errorf("%s is %s, want a tensor", what, compositeKindName(v))
		}
		if v.DType != first.DType || !v.Shape.Equal(first.Shape) {
			return nil, fmt.Errorf("%s is %v in iteration %d and %v in iteration 0: scan outputs must keep their type", what, v.Type, i, first.Type)
		}
		var err error
		if parts[i], err = im.reshape(v, slices.Insert(v.Shape.Clone(), axis, 1)); err != nil {
			return nil, err
		}
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return im.emit1(&Concat{Axis: axis}, parts...)
}

// declaredTensorType is the static tensor type decl declares.
func declaredTensorType(decl *onnx.ValueInfo) (Type, error) {
	if decl == nil || decl.Type == nil || decl.Type.Kind != onnx.TypeTensor || !decl.Type.HasShape {
		return Type{}, fmt.Errorf("the body does not declare its static type")
	}
	dt, err := DTypeFromONNX(decl.Type.ElemType)
	if err != nil {
		return Type{}, err
	}
	shape := make(Shape, len(decl.Type.Shape))
	for i, d := range decl.Type.Shape {
		if !d.HasValue || d.Value < 0 {
			return Type{}, fmt.Errorf("the body declares %q with a dynamic dimension", decl.Name)
		}
		shape[i] = int(d.Value)
	}
	if err := checkShape(shape, dt.Size(), maxFoldBytes); err != nil {
		return Type{}, err
	}
	return Type{dt, shape}, nil
}
