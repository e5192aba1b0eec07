package ir

import "fmt"

// Float32Compute returns a model that computes in float32 what m computes
// in float16 or bfloat16, for training half-precision checkpoints on a
// CPU: its half-precision parameters are float32 copies (the master
// weights an optimizer updates), its half-precision graph inputs are
// declared float32, and at import every half-precision value becomes
// float32 — constants are converted, Casts to a half type cast to float32
// instead — so the graph holds no half-precision value at all. The
// arithmetic is then float32's, more exact than the half-precision
// arithmetic the graph spells out; an operator that makes a half-precision
// value of float32 operands in another way is refused at import, naming
// the node. HalfParams says which parameters were converted, so that
// trained values can be written back in their own dtype. A model without
// half-precision parameters or inputs is returned as it is.
func (m *Model) Float32Compute() *Model {
	half := map[string]DType{}
	params := make([]*Param, len(m.Params))
	for i, p := range m.Params {
		params[i] = p
		if p.Tensor.dtype.narrowFloat() {
			half[p.Name] = p.Tensor.dtype
			params[i] = &Param{Name: p.Name, Tensor: Convert(p.Tensor, Float32)}
		}
	}
	inputs := make([]InputInfo, len(m.Inputs))
	changed := len(half) > 0
	for i, in := range m.Inputs {
		inputs[i] = upcastInfo(in)
		if inputs[i].DType != in.DType || (in.Elem != nil && inputs[i].Elem.DType != in.Elem.DType) {
			changed = true
		}
	}
	if !changed {
		return m
	}
	out := *m
	out.Params, out.Inputs, out.halfParams, out.float32Compute = params, inputs, half, true
	return &out
}

func upcastInfo(in InputInfo) InputInfo {
	if in.DType.narrowFloat() {
		in.DType = Float32
	}
	if in.Elem != nil {
		e := upcastInfo(*in.Elem)
		in.Elem = &e
	}
	return in
}

// HalfParams maps the parameters Float32Compute converted to float32 to
// the dtype the model stores them in (nil for other models).
func (m *Model) HalfParams() map[string]DType { return m.halfParams }

// upcastOutput makes a half-precision value imported for a
// Float32Compute model float32: a constant is converted, a Cast's target
// becomes float32; any other producer is refused.
func upcastOutput(v *Value) error {
	if !v.DType.narrowFloat() {
		return nil
	}
	switch {
	case v.Kind == ConstValue:
		v.Const = Convert(v.Const, Float32)
		v.Type.DType = Float32
		return nil
	case v.Kind == NodeOutput:
		if c, ok := v.Producer.Op.(*Cast); ok {
			c.To = Float32
			v.Type.DType = Float32
			return nil
		}
		return fmt.Errorf("%w: %s makes %s values, which a float32-compute import cannot turn into float32", ErrNotSupported, v.Producer.Op.Name(), v.DType)
	}
	return fmt.Errorf("%w: a %s value of kind %d in a float32-compute import", ErrNotSupported, v.DType, v.Kind)
}
