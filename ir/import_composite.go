package ir

import (
	"fmt"
)

// bindComposite binds a graph input of sequence or optional type from
// Bindings.Composites: every tensor element becomes a constant (a datum
// with a Tensor) or a graph input fed at run time (a datum with only a
// Type, named ElementName(input, path...)).
func (im *importer) bindComposite(in InputInfo, b Bindings) (*Value, error) {
	if _, wrong := b.Values[in.Name]; wrong {
		return nil, fmt.Errorf("ir: input %q is %s: bind it in Composites, not Values", in.Name, in.Kind.article())
	}
	if _, wrong := b.Shapes[in.Name]; wrong {
		return nil, fmt.Errorf("ir: input %q is %s: bind it in Composites, not Shapes", in.Name, in.Kind.article())
	}
	d, ok := b.Composites[in.Name]
	if !ok {
		return nil, fmt.Errorf("ir: input %q is %s: bind it in Bindings.Composites", in.Name, in.Kind.article())
	}
	return im.bindDatum(&in, d, in.Name, nil)
}

// bindDatum binds d at path of input name; info is the declared type
// there (nil when not declared).
func (im *importer) bindDatum(info *InputInfo, d *Datum, name string, path []int) (*Value, error) {
	where := ElementName(name, path...)
	if d == nil {
		return nil, fmt.Errorf("ir: input %q: nil datum", where)
	}
	if info != nil && d.Kind != info.Kind {
		return nil, fmt.Errorf("ir: input %q: got %s, the model declares %s", where, d.Kind.article(), info.Kind.article())
	}
	switch d.Kind {
	case TensorDatum:
		if d.Tensor != nil {
			d = TensorOf(d.Tensor)
		}
		if info != nil {
			if d.Type.DType != info.DType {
				return nil, fmt.Errorf("ir: input %q: %s, the model declares %s", where, d.Type.DType, info.DType)
			}
			decl := *info
			decl.Name = where
			if err := checkDeclared(decl, d.Type.Shape); err != nil {
				return nil, err
			}
		} else if err := checkShape(d.Type.Shape, d.Type.DType.Size(), maxTensorBytes); err != nil {
			return nil, fmt.Errorf("ir: input %q: %w", where, err)
		}
		if !d.Type.Present() {
			return nil, fmt.Errorf("ir: input %q: tensor element without a dtype", where)
		}
		if d.Tensor != nil {
			return &Value{Name: where, Type: d.Type, Kind: ConstValue, Const: d.Tensor}, nil
		}
		if d.Type.DType == String {
			return nil, fmt.Errorf("ir: input %q is a string tensor: bind its value (strings are known at import)", where)
		}
		return &Value{Name: where, Type: Type{d.Type.DType, d.Type.Shape.Clone()}, Kind: GraphInput}, nil
	case SequenceDatum, OptionalDatum:
		if d.Kind == OptionalDatum && len(d.Elems) > 1 {
			return nil, fmt.Errorf("ir: input %q: an optional with %d values", where, len(d.Elems))
		}
		kind := SequenceValue
		if d.Kind == OptionalDatum {
			kind = OptionalValue
		}
		v := &Value{Name: where, Kind: kind, Elems: make([]*Value, len(d.Elems))}
		var elemInfo *InputInfo
		if info != nil {
			elemInfo = info.Elem
		}
		for i, e := range d.Elems {
			ev, err := im.bindDatum(elemInfo, e, name, append(path[:len(path):len(path)], i))
			if err != nil {
				return nil, err
			}
			if ev.Kind == GraphInput {
				im.g.Inputs = append(im.g.Inputs, ev)
			}
			v.Elems[i] = ev
		}
		return v, nil
	}
	return nil, fmt.Errorf("ir: input %q: unknown datum kind %d", where, d.Kind)
}

// result describes graph output v, called name, at path of its model
// output: tensors the graph computes become entries of Graph.Outputs,
// strings stay constants of the Result, sequences and optionals are
// described element by element.
func (im *importer) result(name string, v *Value, path []int) (*Result, error) {
	elemName := ElementName(name, path...)
	switch v.Kind {
	case SequenceValue, OptionalValue:
		r := &Result{Name: elemName, Kind: SequenceDatum, Elems: make([]*Result, len(v.Elems))}
		if v.Kind == OptionalValue {
			r.Kind = OptionalDatum
		}
		for i, e := range v.Elems {
			var err error
			if r.Elems[i], err = im.result(name, e, append(path[:len(path):len(path)], i)); err != nil {
				return nil, err
			}
		}
		return r, nil
	}
	if v.DType == String {
		if v.Kind != ConstValue {
			return nil, fmt.Errorf("ir: graph output %q is a string tensor computed at run time", elemName)
		}
		return &Result{Name: elemName, Kind: TensorDatum, Const: v.Const}, nil
	}
	im.g.Outputs = append(im.g.Outputs, Output{Name: elemName, Value: v})
	return &Result{Name: elemName, Kind: TensorDatum, Output: elemName}, nil
}

// checkOutputNames refuses two outputs of one name (an element name
// "x[0]" that another output of the model also has) and two graph inputs
// of one name.
func (g *Graph) checkOutputNames() error {
	seen := map[string]bool{}
	for _, o := range g.Outputs {
		if seen[o.Name] {
			return fmt.Errorf("ir: two graph outputs are called %q (a sequence element's name equals another output's)", o.Name)
		}
		seen[o.Name] = true
	}
	seen = map[string]bool{}
	for _, v := range g.Inputs {
		if seen[v.Name] {
			return fmt.Errorf("ir: two graph inputs are called %q (a sequence element's name equals another input's)", v.Name)
		}
		seen[v.Name] = true
	}
	return nil
}

// newComposite makes a sequence or optional value of elems (not a node).
func (im *importer) newComposite(kind ValueKind, elems []*Value) *Value {
	v := im.newValue(Type{})
	v.Kind = kind
	v.Elems = elems
	return v
}

// compositeKindName names v's kind for messages.
func compositeKindName(v *Value) string {
	switch v.Kind {
	case SequenceValue:
		return "a sequence"
	case OptionalValue:
		return "an optional"
	}
	return "a tensor"
}
