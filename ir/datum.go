package ir

import (
	"fmt"
	"strconv"
	"strings"
)

// Graph inputs and outputs of sequence and optional type.
//
// The IR has only tensors: an ONNX sequence or optional exists only while a
// model is imported, as the list of its element values (a sequence of
// known length, an optional known to hold a value or none). So its
// structure is fixed when a model is specialized, like the shapes of its
// tensors, and its tensors are what a run feeds and returns:
//
//   - A graph input of sequence or optional type is bound in
//     Bindings.Composites by a Datum giving its structure. Each tensor
//     element is either known at import (a Datum with a Tensor, folded
//     like Bindings.Values) or fed at run time (a Datum with only a Type)
//     as the graph input named ElementName(input, path...).
//   - A graph output of sequence or optional type is returned element by
//     element: Graph.Outputs holds each tensor element under
//     ElementName(output, path...), and Graph.Results records the
//     structure; Graph.Assemble rebuilds the Datum from a run's outputs.
//
// String tensors are values known at import too: a string output is a
// Result holding its tensor, never an entry of Graph.Outputs.

// DatumKind says what a Datum is.
type DatumKind uint8

const (
	TensorDatum DatumKind = iota
	SequenceDatum
	OptionalDatum
)

func (k DatumKind) String() string {
	switch k {
	case TensorDatum:
		return "tensor"
	case SequenceDatum:
		return "sequence"
	case OptionalDatum:
		return "optional"
	}
	return fmt.Sprintf("DatumKind(%d)", uint8(k))
}

// article returns the kind with its indefinite article ("an optional").
func (k DatumKind) article() string {
	if k == OptionalDatum {
		return "an " + k.String()
	}
	return "a " + k.String()
}

// A Datum is a value of any ONNX type dstune handles: a tensor, a
// sequence of data, or an optional datum (Elems holds none or one).
type Datum struct {
	Kind DatumKind
	// Tensor is a tensor datum's value. In Bindings.Composites it may be
	// nil, and then Type says what the graph input fed at run time is.
	Tensor *Tensor
	Type   Type
	// Elems are a sequence's elements in order, or an optional's value.
	Elems []*Datum
}

// TensorOf returns the datum holding t.
func TensorOf(t *Tensor) *Datum {
	return &Datum{Kind: TensorDatum, Tensor: t, Type: Type{t.dtype, t.shape}}
}

// SequenceOf returns the sequence datum of elems.
func SequenceOf(elems ...*Datum) *Datum { return &Datum{Kind: SequenceDatum, Elems: elems} }

// OptionalOf returns an optional datum holding elem, or none when elem is
// nil.
func OptionalOf(elem *Datum) *Datum {
	if elem == nil {
		return &Datum{Kind: OptionalDatum}
	}
	return &Datum{Kind: OptionalDatum, Elems: []*Datum{elem}}
}

// String describes d's structure and types: "float32[2,3]",
// "sequence[float32[2,3], int64[]]", "sequence[5 × float32[4]]",
// "optional[]".
func (d *Datum) String() string {
	if d.Kind == TensorDatum {
		return d.Type.String()
	}
	parts := make([]string, len(d.Elems))
	same := true
	for i, e := range d.Elems {
		parts[i] = e.String()
		same = same && parts[i] == parts[0]
	}
	switch {
	case len(parts) > 1 && same:
		return fmt.Sprintf("%s[%d × %s]", d.Kind, len(parts), parts[0])
	case len(parts) > 4:
		return fmt.Sprintf("%s[%s, … (%d elements)]", d.Kind, strings.Join(parts[:3], ", "), len(parts))
	}
	return d.Kind.String() + "[" + strings.Join(parts, ", ") + "]"
}

// ElementName names the graph input or output that carries the element of
// the sequence or optional called name at path (one index per level of
// nesting; an optional's value is index 0): "seq[2]", "opt[0][1]".
func ElementName(name string, path ...int) string {
	var b strings.Builder
	b.WriteString(name)
	for _, i := range path {
		b.WriteByte('[')
		b.WriteString(strconv.Itoa(i))
		b.WriteByte(']')
	}
	return b.String()
}

// A Result is one model output of a specialized graph: a tensor computed
// by the graph (Output names its entry of Graph.Outputs), a tensor known
// at import that backends do not handle (Const: a string tensor), or a
// sequence or optional of results.
type Result struct {
	Name   string // the model's name for it (ElementName for elements)
	Kind   DatumKind
	Output string
	Const  *Tensor
	Elems  []*Result
}

// Assemble rebuilds the model's outputs, in order, from a run's outputs
// keyed by Graph.Outputs name (as accel.RunNamed and Interpret return
// them).
func (g *Graph) Assemble(outputs map[string]*Tensor) ([]*Datum, error) {
	res := make([]*Datum, len(g.Results))
	for i, r := range g.Results {
		d, err := r.assemble(outputs)
		if err != nil {
			return nil, err
		}
		res[i] = d
	}
	return res, nil
}

func (r *Result) assemble(outputs map[string]*Tensor) (*Datum, error) {
	if r.Kind == TensorDatum {
		if r.Const != nil {
			return TensorOf(r.Const), nil
		}
		t, ok := outputs[r.Output]
		if !ok {
			return nil, fmt.Errorf("ir: output %q is missing from the run's outputs", r.Output)
		}
		return TensorOf(t), nil
	}
	d := &Datum{Kind: r.Kind, Elems: make([]*Datum, len(r.Elems))}
	for i, e := range r.Elems {
		var err error
		if d.Elems[i], err = e.assemble(outputs); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// DatumDiff is how a computed datum differs from the expected one: a
// Diff over all its tensor elements together (the largest errors, the
// off elements counted over all of them), or the first structural
// mismatch (different kinds, lengths, dtypes or shapes) in Mismatch.
// Path locates the mismatch or the first tensor element with an off
// element ("[1][0]"; "" for the datum itself), whose flat index is
// FirstOff.
type DatumDiff struct {
	Diff
	Path string
}

func (d DatumDiff) String() string {
	if d.Path == "" {
		return d.Diff.String()
	}
	return "element " + d.Path + ": " + d.Diff.String()
}

// CompareData compares got with want tensor by tensor with Compare.
func CompareData(got, want *Datum, rtol, atol float64) DatumDiff {
	res := DatumDiff{Diff: Diff{FirstOff: -1}}
	var walk func(g, w *Datum, path string) bool
	walk = func(g, w *Datum, path string) bool {
		mismatch := ""
		switch {
		case g.Kind != w.Kind:
			mismatch = fmt.Sprintf("got %s, want %s", g.Kind.article(), w.Kind.article())
		case g.Kind == TensorDatum:
			d := Compare(g.Tensor, w.Tensor, rtol, atol)
			if d.Mismatch != "" {
				mismatch = d.Mismatch
				break
			}
			if d.Off > 0 && res.Off == 0 {
				res.Path, res.FirstOff = path, d.FirstOff
			}
			res.Off += d.Off
			res.MaxAbs = max(res.MaxAbs, d.MaxAbs)
			res.MaxRel = max(res.MaxRel, d.MaxRel)
			res.Finite += d.Finite
			res.NonFinite += d.NonFinite
			return true
		case len(g.Elems) != len(w.Elems):
			mismatch = fmt.Sprintf("got %s of %d, want %d", g.Kind.article(), len(g.Elems), len(w.Elems))
		}
		if mismatch != "" {
			res.Mismatch, res.Path = mismatch, path
			return false
		}
		for i := range g.Elems {
			if !walk(g.Elems[i], w.Elems[i], path+"["+strconv.Itoa(i)+"]") {
				return false
			}
		}
		return true
	}
	walk(got, want, "")
	return res
}

// Len is the number of tensor elements d holds.
func (d *Datum) Len() int {
	if d.Kind == TensorDatum {
		return d.Type.Shape.Size()
	}
	n := 0
	for _, e := range d.Elems {
		n += e.Len()
	}
	return n
}

// Fed returns d's structure with every tensor left to be fed at run time
// (a Datum with only its Type), and adds the tensors to feeds under the
// names of the graph inputs that carry them: the binding of a sequence or
// optional input called name whose elements are fed, not folded.
func (d *Datum) Fed(name string, feeds map[string]*Tensor) *Datum {
	return d.fed(name, nil, feeds)
}

func (d *Datum) fed(name string, path []int, feeds map[string]*Tensor) *Datum {
	if d.Kind == TensorDatum {
		if d.Tensor != nil {
			feeds[ElementName(name, path...)] = d.Tensor
		}
		return &Datum{Kind: TensorDatum, Type: d.Type}
	}
	out := &Datum{Kind: d.Kind, Elems: make([]*Datum, len(d.Elems))}
	for i, e := range d.Elems {
		out.Elems[i] = e.fed(name, append(path[:len(path):len(path)], i), feeds)
	}
	return out
}
