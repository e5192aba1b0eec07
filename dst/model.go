package dst

import (
	"fmt"

	"github.com/dstune/dstune/onnx"
)

// safetensorsDTypes names ONNX element types as Initializer.DType (and
// the delta format) does.
var safetensorsDTypes = map[onnx.DataType]string{
	onnx.Float: "F32", onnx.Float16: "F16", onnx.BFloat16: "BF16", onnx.Double: "F64",
	onnx.Int8: "I8", onnx.Uint8: "U8", onnx.Int16: "I16", onnx.Uint16: "U16",
	onnx.Int32: "I32", onnx.Uint32: "U32", onnx.Int64: "I64", onnx.Uint64: "U64", onnx.Bool: "BOOL",
}

// InitializersOf describes every initializer of m for BaseHash and the
// shape checks. An initializer of a type deltas cannot describe (strings,
// complex numbers, 4-bit types) is an error naming it.
func InitializersOf(m *onnx.Model) ([]Initializer, error) {
	if m.Graph == nil {
		return nil, fmt.Errorf("the model has no graph")
	}
	inits := make([]Initializer, 0, len(m.Graph.Initializers))
	for _, it := range m.Graph.Initializers {
		name, ok := safetensorsDTypes[it.DataType]
		if !ok {
			return nil, fmt.Errorf("initializer %q has type %s, which deltas cannot describe", it.Name, it.DataType)
		}
		data, err := it.Bytes()
		if err != nil {
			return nil, fmt.Errorf("initializer %q: %w", it.Name, err)
		}
		inits = append(inits, Initializer{Name: it.Name, DType: name, Dims: it.Dims, Data: data})
	}
	return inits, nil
}
