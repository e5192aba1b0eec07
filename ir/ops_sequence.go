package ir

import (
	"fmt"
	"slices"

	"github.com/dstune/dstune/onnx"
)

// Sequences and optionals exist only at import: a sequence is the list
// of its element values, an optional a value or none (Value.Elems). The
// operators below rearrange those lists; positions must therefore be
// known at import (they are static operands). Element tensors stay
// ordinary values: computed at run time or constants.

func init() {
	for name, f := range map[string]importFunc{
		"SequenceConstruct":  importSequenceConstruct,
		"SequenceEmpty":      importSequenceEmpty,
		"SequenceInsert":     importSequenceInsert,
		"SequenceErase":      importSequenceErase,
		"SequenceAt":         importSequenceAt,
		"SequenceLength":     importSequenceLength,
		"ConcatFromSequence": importConcatFromSequence,
		"SplitToSequence":    importSplitToSequence,
		"SequenceMap":        importSequenceMap,
		"Optional":           importOptional,
		"OptionalHasElement": importOptionalHasElement,
		"OptionalGetElement": importOptionalGetElement,
	} {
		registerOp("", name, f)
	}
	registerStaticOperands("", "SequenceInsert", 2)
	registerStaticOperands("", "SequenceErase", 1)
	registerStaticOperands("", "SequenceAt", 1)
	registerStaticOperands("", "SplitToSequence", 1)
	registerTakesComposites("", "SequenceConstruct", "SequenceInsert", "SequenceErase", "SequenceAt", "SequenceLength",
		"ConcatFromSequence", "SequenceMap", "Optional", "OptionalHasElement", "OptionalGetElement")
}

// wantSequence checks that v is a sequence.
func wantSequence(v *Value, what string) error {
	if v == nil {
		return fmt.Errorf("%s is missing", what)
	}
	if v.Kind != SequenceValue {
		return fmt.Errorf("%s is %s, want a sequence", what, compositeKindName(v))
	}
	return nil
}

// wantTensor checks that v is a tensor.
func wantTensor(v *Value, what string) error {
	if v == nil {
		return fmt.Errorf("%s is missing", what)
	}
	if v.IsComposite() {
		return fmt.Errorf("%s is %s, want a tensor", what, compositeKindName(v))
	}
	return nil
}

// sequencePosition reads the position operand at input i (def when
// absent) and resolves a negative one against n elements; it must lie in
// [0, n+extra).
func (im *importer) sequencePosition(in []*Value, i, def, n, extra int) (int, error) {
	pos := def
	if i < len(in) && in[i] != nil {
		if in[i].IsComposite() {
			return 0, fmt.Errorf("position is %s, want an integer tensor", compositeKindName(in[i]))
		}
		p, _, err := im.constInts(in, i, "position")
		if err != nil {
			return 0, err
		}
		if len(p) != 1 {
			return 0, fmt.Errorf("position has %d elements, want 1", len(p))
		}
		pos = p[0]
		if pos < 0 {
			pos += n
		}
	}
	if pos < 0 || pos >= n+extra {
		return 0, fmt.Errorf("position %d is out of range for a sequence of %d", pos, n)
	}
	return pos, nil
}

func checkElemDType(seq []*Value, v *Value) error {
	if len(seq) > 0 && !seq[0].IsComposite() && !v.IsComposite() && seq[0].DType != v.DType {
		return fmt.Errorf("tensor is %s, the sequence holds %s", v.DType, seq[0].DType)
	}
	return nil
}

func importSequenceConstruct(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("want at least one input")
	}
	for i, v := range in {
		if err := wantTensor(v, fmt.Sprintf("input %d", i)); err != nil {
			return nil, err
		}
		if err := checkElemDType(in[:i], v); err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
	}
	return []*Value{im.newComposite(SequenceValue, slices.Clone(in))}, nil
}

func importSequenceEmpty(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if len(in) != 0 {
		return nil, fmt.Errorf("want no inputs, got %d", len(in))
	}
	return []*Value{im.newComposite(SequenceValue, nil)}, nil
}

func importSequenceInsert(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 3); err != nil {
		return nil, err
	}
	if err := wantSequence(in[0], "input_sequence"); err != nil {
		return nil, err
	}
	if err := wantTensor(in[1], "tensor"); err != nil {
		return nil, err
	}
	seq := in[0].Elems
	if err := checkElemDType(seq, in[1]); err != nil {
		return nil, err
	}
	pos, err := im.sequencePosition(in, 2, len(seq), len(seq), 1)
	if err != nil {
		return nil, err
	}
	return []*Value{im.newComposite(SequenceValue, slices.Insert(slices.Clone(seq), pos, in[1]))}, nil
}

func importSequenceErase(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 2); err != nil {
		return nil, err
	}
	if err := wantSequence(in[0], "input_sequence"); err != nil {
		return nil, err
	}
	seq := in[0].Elems
	pos, err := im.sequencePosition(in, 1, len(seq)-1, len(seq), 0)
	if err != nil {
		return nil, err
	}
	return []*Value{im.newComposite(SequenceValue, slices.Delete(slices.Clone(seq), pos, pos+1))}, nil
}

func importSequenceAt(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	if err := wantSequence(in[0], "input_sequence"); err != nil {
		return nil, err
	}
	pos, err := im.sequencePosition(in, 1, 0, len(in[0].Elems), 0)
	if err != nil {
		return nil, err
	}
	return []*Value{in[0].Elems[pos]}, nil
}

func importSequenceLength(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	if err := wantSequence(in[0], "input_sequence"); err != nil {
		return nil, err
	}
	return []*Value{im.constant(ScalarInt64(int64(len(in[0].Elems))))}, nil
}

// importConcatFromSequence concatenates the elements along axis, or
// stacks them along a new axis (new_axis=1).
func importConcatFromSequence(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	if err := wantSequence(in[0], "input_sequence"); err != nil {
		return nil, err
	}
	seq := in[0].Elems
	if len(seq) == 0 {
		return nil, fmt.Errorf("the sequence is empty (its elements' shape is unknown)")
	}
	for i, v := range seq {
		if err := wantTensor(v, fmt.Sprintf("element %d", i)); err != nil {
			return nil, err
		}
	}
	newAxis, err := attrInt(n, "new_axis", 0)
	if err != nil {
		return nil, err
	}
	if newAxis == 0 {
		return importConcat(im, n, seq)
	}
	axis, err := attrAxis(n, 0, len(seq[0].Shape)+1)
	if err != nil {
		return nil, err
	}
	return one(im.stack(seq, axis, nil, "element"))
}

// importSplitToSequence splits the input along axis: into pieces of the
// sizes split lists, into pieces of size split (the last one smaller),
// or into single slices (squeezed unless keepdims).
// maxSequenceElements bounds the elements of a sequence SplitToSequence
// makes (a variable so that tests can lower it).
var maxSequenceElements = 1 << 15

func importSplitToSequence(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 2); err != nil {
		return nil, err
	}
	x := in[0]
	axis, err := attrAxis(n, 0, len(x.Shape))
	if err != nil {
		return nil, err
	}
	keep, err := attrInt(n, "keepdims", 1)
	if err != nil {
		return nil, err
	}
	length := x.Shape[axis]
	var sizes []int
	squeeze := false
	// Each element is a value of its own: a sequence of millions would
	// take the import's memory and the planner's time without bound.
	tooMany := func(elems int) error {
		return fmt.Errorf("splits an axis of %d into %d elements, more than the %d a sequence may hold", length, elems, maxSequenceElements)
	}
	switch split, err := im.constTensor(in, 1, "split"); {
	case err != nil:
		return nil, err
	case split == nil:
		if length > maxSequenceElements {
			return nil, tooMany(length)
		}
		sizes = make([]int, length)
		for i := range sizes {
			sizes[i] = 1
		}
		squeeze = keep == 0
	case !split.dtype.IsInt():
		return nil, fmt.Errorf("split is %s, want an integer type", split.dtype)
	case len(split.shape) == 0:
		size := int(split.Int64At(0))
		if size <= 0 {
			return nil, fmt.Errorf("split size %d, want a positive size", size)
		}
		if elems := (length + size - 1) / size; elems > maxSequenceElements {
			return nil, tooMany(elems)
		}
		for start := 0; start < length; start += size {
			sizes = append(sizes, min(size, length-start))
		}
	case len(split.shape) == 1:
		total := 0
		for _, s := range split.Ints() {
			if s < 0 || s > length {
				return nil, fmt.Errorf("split %v for length %d", split.Ints(), length)
			}
			total += s
			sizes = append(sizes, s)
		}
		if total != length {
			return nil, fmt.Errorf("split %v sums to %d, the axis has %d", sizes, total, length)
		}
	default:
		return nil, fmt.Errorf("split has shape %v, want a scalar or 1-D", split.shape)
	}
	var elems []*Value
	switch len(sizes) {
	case 0: // an empty axis split into slices of 1
	case 1:
		elems = []*Value{x}
	default:
		pieces, err := im.emit(&Split{Axis: axis, Sizes: sizes}, x)
		if err != nil {
			return nil, err
		}
		elems = slices.Clone(pieces) // the node's own list stays as it is
	}
	if squeeze {
		for i, piece := range elems {
			if elems[i], err = im.reshape(piece, slices.Delete(piece.Shape.Clone(), axis, axis+1)); err != nil {
				return nil, err
			}
		}
	}
	return []*Value{im.newComposite(SequenceValue, elems)}, nil
}

// importSequenceMap applies the body to every element of the first
// input (a sequence): additional sequence inputs contribute their
// element at the same position, tensor inputs themselves. Each body
// output makes one output sequence.
func importSequenceMap(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("want at least one input")
	}
	if err := wantSequence(in[0], "input_sequence"); err != nil {
		return nil, err
	}
	body, err := n.AttrGraph("body")
	if err != nil {
		return nil, err
	}
	if body == nil {
		return nil, fmt.Errorf("no body")
	}
	length := len(in[0].Elems)
	for i, v := range in {
		if v == nil {
			return nil, fmt.Errorf("input %d is missing", i)
		}
		if v.Kind == SequenceValue && len(v.Elems) != length {
			return nil, fmt.Errorf("input %d is a sequence of %d elements, input 0 of %d", i, len(v.Elems), length)
		}
		if v.Kind == OptionalValue {
			return nil, fmt.Errorf("input %d is an optional, want a sequence or tensor", i)
		}
	}
	outs := make([][]*Value, len(body.Outputs))
	for e := range length {
		args := make([]*Value, len(in))
		for i, v := range in {
			args[i] = v
			if v.Kind == SequenceValue {
				args[i] = v.Elems[e]
			}
		}
		res, err := im.subgraph(loopSubgraph, "body", body, args, fmt.Sprintf("@%d", e))
		if err != nil {
			return nil, fmt.Errorf("element %d: %w", e, err)
		}
		for k, v := range res {
			outs[k] = append(outs[k], v)
		}
	}
	seqs := make([]*Value, len(outs))
	for k, elems := range outs {
		seqs[k] = im.newComposite(SequenceValue, elems)
	}
	return seqs, nil
}

func importOptional(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if len(in) > 1 {
		return nil, fmt.Errorf("want at most one input, got %d", len(in))
	}
	if len(in) == 0 || in[0] == nil {
		if a := n.Attr("type"); a == nil || a.Type != onnx.AttrTypeProto {
			return nil, fmt.Errorf("an Optional without input needs its type attribute")
		}
		return []*Value{im.newComposite(OptionalValue, nil)}, nil
	}
	if in[0].Kind == OptionalValue {
		return nil, fmt.Errorf("input is an optional; an optional holds a tensor or a sequence")
	}
	return []*Value{im.newComposite(OptionalValue, []*Value{in[0]})}, nil
}

// importOptionalHasElement is a constant: whether the input is present
// (a tensor or sequence input always is).
func importOptionalHasElement(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if len(in) > 1 {
		return nil, fmt.Errorf("want at most one input, got %d", len(in))
	}
	has := len(in) == 1 && in[0] != nil && (in[0].Kind != OptionalValue || len(in[0].Elems) == 1)
	return []*Value{im.constant(FromBools(Shape{}, []bool{has}))}, nil
}

func importOptionalGetElement(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	v := in[0]
	if v.Kind != OptionalValue {
		return []*Value{v}, nil // a tensor or sequence is its own element
	}
	if len(v.Elems) == 0 {
		return nil, fmt.Errorf("the optional input %q holds no value", n.Inputs[0])
	}
	return []*Value{v.Elems[0]}, nil
}
