package ir

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"github.com/dstune/dstune/onnx"
)

// String operators. String tensors are known at import (string graph
// inputs are value inputs), so every string op folds there: the ops with
// a static output shape (StringConcat, RegexFullMatch, Equal on strings)
// are IR ops whose Eval runs when import folds them; StringNormalizer and
// StringSplit, whose output shapes depend on the strings, are computed by
// their importers. Backends never see strings.

func init() {
	registerOp("", "StringConcat", importStringConcat)
	registerOp("", "RegexFullMatch", importRegexFullMatch)
	registerOp("", "StringNormalizer", importStringNormalizer)
	registerOp("", "StringSplit", importStringSplit)
}

// stringOp is implemented by the IR ops that take or produce string
// tensors. Strings are known at import: such ops always fold there, and
// backends never see them.
type stringOp interface {
	Op
	foldsStrings()
}

// checkStrings refuses string operands for ops that do not handle them,
// and string results that would only be known at run time.
func checkStrings(op Op, in, out []Type, allConst bool) error {
	strs := false
	for _, t := range in {
		strs = strs || t.DType == String
	}
	for _, t := range out {
		strs = strs || t.DType == String
	}
	if !strs {
		return nil
	}
	_, handles := op.(stringOp)
	if data := movesElements(op); data != nil {
		// Data movement moves strings like any element, as long as the
		// strings are its data (not, say, Gather's indices).
		handles = true
		for i, t := range in {
			if t.DType == String && !data(i) {
				handles = false
			}
		}
	}
	if !handles {
		return fmt.Errorf("%w: %s on string tensors", ErrNotSupported, op.Name())
	}
	if !allConst {
		return fmt.Errorf("%w: %s on values computed at run time produces strings (strings must be known at import)", ErrNotSupported, op.Name())
	}
	return nil
}

// movesElements returns, for the ops whose outputs are elements of some
// of their inputs rearranged, which inputs those are (nil for other
// ops): these ops move strings too (see evalMovingStrings).
func movesElements(op Op) func(input int) bool {
	switch op.(type) {
	case *Reshape, *Copy, *Transpose, *Expand, *Split, *Slice, *Gather, *GatherElements:
		return func(i int) bool { return i == 0 }
	case *Where:
		return func(i int) bool { return i == 1 || i == 2 }
	case *Concat:
		return func(int) bool { return true }
	}
	return nil
}

// stringDataPositions returns movesElements for op when it is not a
// string op itself (nil otherwise).
func stringDataPositions(op Op) func(input int) bool {
	if _, ok := op.(stringOp); ok {
		return nil
	}
	return movesElements(op)
}

// evalMovingStrings evaluates a data-movement op on string tensors: each
// string input is replaced by the int64 indices of its strings in one
// table, the op moves the indices, and the outputs map them back.
func evalMovingStrings(op Op, in, out []*Tensor) error {
	hasStrings := false
	for _, t := range in {
		hasStrings = hasStrings || (t != nil && t.dtype == String)
	}
	if !hasStrings {
		return op.Eval(in, out)
	}
	var table []string
	idx := make([]*Tensor, len(in))
	for i, t := range in {
		if t == nil || t.dtype != String {
			idx[i] = t
			continue
		}
		idx[i] = NewTensor(Int64, t.shape)
		for j, s := range t.strs {
			idx[i].Int64s()[j] = int64(len(table))
			table = append(table, s)
		}
	}
	moved := make([]*Tensor, len(out))
	for i, t := range out {
		if t == nil {
			continue
		}
		if t.dtype != String {
			return fmt.Errorf("%s: a string op with a %s output", op.Name(), t.dtype)
		}
		moved[i] = NewTensor(Int64, t.shape)
	}
	if err := op.Eval(idx, moved); err != nil {
		return err
	}
	for i, t := range out {
		if t == nil {
			continue
		}
		for j, k := range moved[i].Int64s() {
			t.strs[j] = table[k]
		}
	}
	return nil
}

// wantStringInput checks that input i is a string tensor known at import.
func wantStringInput(in []*Value, i int, what string) (*Tensor, error) {
	if i >= len(in) || in[i] == nil {
		return nil, fmt.Errorf("%s is missing", what)
	}
	if in[i].IsComposite() || in[i].DType != String {
		return nil, fmt.Errorf("%s is %v, want a string tensor", what, in[i])
	}
	if in[i].Kind != ConstValue {
		return nil, fmt.Errorf("%s is a string tensor not known at import", what)
	}
	return in[i].Const, nil
}

// forBroadcast calls fn for every element o of the broadcast of a and b
// (shape out) with the flat indices of the operand elements it reads.
func forBroadcast(out, a, b Shape, fn func(o, ia, ib int)) {
	sa, sb := BroadcastStrides(a, out), BroadcastStrides(b, out)
	idx := make([]int, len(out))
	ia, ib := 0, 0
	for o := range out.Size() {
		fn(o, ia, ib)
		for d := len(out) - 1; d >= 0; d-- {
			idx[d]++
			ia += sa[d]
			ib += sb[d]
			if idx[d] < out[d] {
				break
			}
			ia -= sa[d] * out[d]
			ib -= sb[d] * out[d]
			idx[d] = 0
		}
	}
}

// ---------------------------------------------------------------- StringConcat

// StringConcat concatenates two string tensors element-wise, with
// broadcasting.
type StringConcat struct{}

func (op *StringConcat) Name() string  { return "StringConcat" }
func (op *StringConcat) foldsStrings() {}

func (op *StringConcat) Infer(in []Type) ([]Type, error) {
	shape, err := stringPairShape(in)
	if err != nil {
		return nil, err
	}
	return []Type{{String, shape}}, nil
}

// stringPairShape checks the operands of an element-wise op on two
// string tensors and returns the shape they broadcast to.
func stringPairShape(in []Type) (Shape, error) {
	if err := wantInputs(in, 2, 2); err != nil {
		return nil, err
	}
	if in[0].DType != String || in[1].DType != String {
		return nil, fmt.Errorf("operands are %s and %s, want strings", in[0].DType, in[1].DType)
	}
	return BroadcastShapes(in[0].Shape, in[1].Shape)
}

// maxStringBytes bounds the bytes of the strings one op creates (a short
// string broadcast against a long one would otherwise multiply).
const maxStringBytes = 1 << 30

func (op *StringConcat) Eval(in, out []*Tensor) error {
	a, b, y := in[0].strs, in[1].strs, out[0].strs
	total := 0
	forBroadcast(out[0].shape, in[0].shape, in[1].shape, func(o, ia, ib int) { total = min(total+len(a[ia])+len(b[ib]), maxStringBytes+1) })
	if total > maxStringBytes {
		return fmt.Errorf("the concatenated strings exceed %d MiB", maxStringBytes>>20)
	}
	forBroadcast(out[0].shape, in[0].shape, in[1].shape, func(o, ia, ib int) { y[o] = a[ia] + b[ib] })
	return nil
}

func importStringConcat(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 2, 2); err != nil {
		return nil, err
	}
	return one(im.emit1(&StringConcat{}, in...))
}

// ---------------------------------------------------------------- Equal on strings

// StringEqual is Equal on string tensors (with broadcasting).
type StringEqual struct{}

func (op *StringEqual) Name() string  { return "Equal(string)" }
func (op *StringEqual) foldsStrings() {}

func (op *StringEqual) Infer(in []Type) ([]Type, error) {
	shape, err := stringPairShape(in)
	if err != nil {
		return nil, err
	}
	return []Type{{Bool, shape}}, nil
}

func (op *StringEqual) Eval(in, out []*Tensor) error {
	a, b, y := in[0].strs, in[1].strs, out[0].Bools()
	forBroadcast(out[0].shape, in[0].shape, in[1].shape, func(o, ia, ib int) { y[o] = a[ia] == b[ib] })
	return nil
}

// ---------------------------------------------------------------- RegexFullMatch

// RegexFullMatch reports for every string whether the whole of it matches
// Pattern (RE2 syntax, as ONNX specifies; Go's regexp is RE2).
type RegexFullMatch struct {
	Pattern *regexp.Regexp // anchored: \A(?:pattern)\z
}

func (op *RegexFullMatch) Name() string  { return "RegexFullMatch" }
func (op *RegexFullMatch) foldsStrings() {}

func (op *RegexFullMatch) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	if in[0].DType != String {
		return nil, fmt.Errorf("input is %s, want strings", in[0].DType)
	}
	return []Type{{Bool, in[0].Shape}}, nil
}

func (op *RegexFullMatch) Eval(in, out []*Tensor) error {
	y := out[0].Bools()
	for i, s := range in[0].strs {
		y[i] = op.Pattern.MatchString(s)
	}
	return nil
}

func importRegexFullMatch(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	pattern, err := n.AttrString("pattern", "")
	if err != nil {
		return nil, err
	}
	re, err := regexp.Compile(`\A(?:` + pattern + `)\z`)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	return one(im.emit1(&RegexFullMatch{Pattern: re}, in[0]))
}

// ---------------------------------------------------------------- StringNormalizer

// importStringNormalizer removes the stopwords from X ([C] or [1, C]),
// comparing case-insensitively unless is_case_sensitive, then changes the
// case of what is left (LOWER, UPPER or NONE). When nothing is left the
// output is one empty string ([1] or [1, 1]).
func importStringNormalizer(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x, err := wantStringInput(in, 0, "X")
	if err != nil {
		return nil, err
	}
	if r := len(x.shape); r != 1 && !(r == 2 && x.shape[0] == 1) {
		return nil, fmt.Errorf("X is %v, want [C] or [1, C]", x)
	}
	action, err := n.AttrString("case_change_action", "NONE")
	if err != nil {
		return nil, err
	}
	var change func(string) string
	switch action {
	case "NONE":
		change = func(s string) string { return s }
	case "LOWER":
		change = strings.ToLower
	case "UPPER":
		change = strings.ToUpper
	default:
		return nil, fmt.Errorf("case_change_action %q, want LOWER, UPPER or NONE", action)
	}
	sensitive, err := attrInt(n, "is_case_sensitive", 0)
	if err != nil {
		return nil, err
	}
	stop := map[string]bool{}
	if a := n.Attr("stopwords"); a != nil {
		if a.Type != onnx.AttrStrings {
			return nil, fmt.Errorf("stopwords is %s, want STRINGS", a.Type)
		}
		for _, w := range a.Strings {
			if sensitive == 0 {
				stop[strings.ToLower(string(w))] = true
			} else {
				stop[string(w)] = true
			}
		}
	}
	var kept []string
	for _, s := range x.strs {
		key := s
		if sensitive == 0 {
			key = strings.ToLower(s)
		}
		if !stop[key] {
			kept = append(kept, change(s))
		}
	}
	if len(kept) == 0 {
		kept = []string{""}
	}
	shape := Shape{len(kept)}
	if len(x.shape) == 2 {
		shape = Shape{1, len(kept)}
	}
	return []*Value{im.constant(FromStrings(shape, kept))}, nil
}

// ---------------------------------------------------------------- StringSplit

// importStringSplit splits every string of X like Python's str.split:
// at each occurrence of delimiter, or, without one, at runs of white
// space (leading and trailing white space dropped); at most maxsplit
// times when maxsplit is given. Y has X's shape plus one axis as long as
// the longest split, padded with empty strings; Z counts each string's
// pieces.
func importStringSplit(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	x, err := wantStringInput(in, 0, "X")
	if err != nil {
		return nil, err
	}
	delim, err := n.AttrString("delimiter", "")
	if err != nil {
		return nil, err
	}
	maxSplit := -1
	if n.Attr("maxsplit") != nil {
		if maxSplit, err = attrInt(n, "maxsplit", 0); err != nil {
			return nil, err
		}
	}
	pieces := make([][]string, len(x.strs))
	width := 0
	total := 0
	for i, s := range x.strs {
		pieces[i] = splitString(s, delim, maxSplit)
		width = max(width, len(pieces[i]))
		total += len(pieces[i])
	}
	shape := append(x.shape.Clone(), width)
	if err := checkShape(shape, String.Size(), maxFoldBytes); err != nil {
		return nil, err
	}
	y := NewTensor(String, shape)
	z := NewTensor(Int64, x.shape)
	for i, p := range pieces {
		copy(y.strs[i*width:], p)
		z.Int64s()[i] = int64(len(p))
	}
	return []*Value{im.constant(y), im.constant(z)}, nil
}

// splitString is Python's s.split(delim or None, maxsplit) (maxsplit < 0:
// no limit).
func splitString(s, delim string, maxSplit int) []string {
	if delim != "" {
		limit := -1
		if maxSplit >= 0 {
			limit = maxSplit + 1
		}
		return strings.SplitN(s, delim, limit)
	}
	var out []string
	rest := strings.TrimLeftFunc(s, unicode.IsSpace)
	for rest != "" {
		if maxSplit >= 0 && len(out) == maxSplit {
			out = append(out, rest)
			break
		}
		end := strings.IndexFunc(rest, unicode.IsSpace)
		if end < 0 {
			out = append(out, rest)
			break
		}
		out = append(out, rest[:end])
		rest = strings.TrimLeftFunc(rest[end:], unicode.IsSpace)
	}
	return out
}
