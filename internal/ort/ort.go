//go:build cgo

package ort

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"

	"github.com/dstune/dstune/onnx"
	ortgo "github.com/yalue/onnxruntime_go"
)

var (
	initOnce sync.Once
	initErr  error
)

// Init loads the onnxruntime library named by $DSTUNE_ORT_LIB and creates
// its environment, once per process.
func Init() error {
	initOnce.Do(func() {
		lib := os.Getenv("DSTUNE_ORT_LIB")
		if lib == "" {
			initErr = fmt.Errorf("%w: DSTUNE_ORT_LIB is not set", ErrUnavailable)
			return
		}
		if _, err := os.Stat(lib); err != nil {
			initErr = fmt.Errorf("%w: %v", ErrUnavailable, err)
			return
		}
		ortgo.SetSharedLibraryPath(lib)
		if err := ortgo.InitializeEnvironment(ortgo.WithLogLevelError()); err != nil {
			initErr = fmt.Errorf("%w: %s: %v", ErrUnavailable, lib, err)
		}
	})
	return initErr
}

// Version is the loaded onnxruntime's version string.
func Version() string {
	if Init() != nil {
		return ""
	}
	return ortgo.GetVersion()
}

// Run runs the model file at modelPath (its external data next to it) on
// one thread with the given inputs, by graph input name, and returns every
// graph output as a tensor with little-endian Raw bytes. Inputs must be
// non-scalar tensors with at least one element. A graph without inputs
// (its outputs computed from initializers) runs too.
func Run(modelPath string, inputs map[string]*onnx.Tensor) (map[string]*onnx.Tensor, error) {
	if err := Init(); err != nil {
		return nil, err
	}
	ins, outs, err := ortgo.GetInputOutputInfo(modelPath)
	if err != nil {
		return nil, fmt.Errorf("ort: %s: %w", modelPath, err)
	}
	if len(outs) == 0 {
		return nil, fmt.Errorf("ort: %s: the graph has no outputs", modelPath)
	}
	if len(ins) == 0 {
		// onnxruntime_go cannot run a session without inputs: run a copy
		// of the model that declares one more, which nothing reads.
		dir, err := os.MkdirTemp("", "dstune-ort-")
		if err != nil {
			return nil, fmt.Errorf("ort: %w", err)
		}
		defer os.RemoveAll(dir)
		name, err := withUnusedInput(modelPath, filepath.Join(dir, "model.onnx"))
		if err != nil {
			return nil, fmt.Errorf("ort: %s: %w", modelPath, err)
		}
		unused, err := onnx.FromFloat32s(name, []int64{1}, []float32{0})
		if err != nil {
			return nil, fmt.Errorf("ort: %w", err)
		}
		modelPath = filepath.Join(dir, "model.onnx")
		inputs = map[string]*onnx.Tensor{name: unused}
		ins = []ortgo.InputOutputInfo{{Name: name}}
	}
	var inNames, outNames []string
	var inValues []ortgo.Value
	defer func() {
		for _, v := range inValues {
			v.Destroy()
		}
	}()
	for _, info := range ins {
		t, ok := inputs[info.Name]
		if !ok {
			return nil, fmt.Errorf("ort: %s: no value for input %q", modelPath, info.Name)
		}
		v, err := toORT(t)
		if err != nil {
			return nil, fmt.Errorf("ort: %s: input %q: %w", modelPath, info.Name, err)
		}
		inNames = append(inNames, info.Name)
		inValues = append(inValues, v)
	}
	for _, info := range outs {
		outNames = append(outNames, info.Name)
	}
	opts, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	session, err := ortgo.NewDynamicAdvancedSession(modelPath, inNames, outNames, opts)
	if err != nil {
		return nil, fmt.Errorf("ort: %s: %w", modelPath, err)
	}
	defer session.Destroy()
	outValues := make([]ortgo.Value, len(outNames))
	if err := session.Run(inValues, outValues); err != nil {
		return nil, fmt.Errorf("ort: %s: run: %w", modelPath, err)
	}
	result := map[string]*onnx.Tensor{}
	for i, v := range outValues {
		t, err := fromORT(outNames[i], v)
		v.Destroy()
		if err != nil {
			return nil, fmt.Errorf("ort: %s: output %q: %w", modelPath, outNames[i], err)
		}
		result[outNames[i]] = t
	}
	return result, nil
}

// withUnusedInput writes to path a copy of the model at modelPath whose
// graph declares one more input, a float [1] nothing reads, and returns
// its name.
func withUnusedInput(modelPath, path string) (string, error) {
	m, err := onnx.ReadFile(modelPath)
	if err != nil {
		return "", err
	}
	defer m.Close()
	names := map[string]bool{}
	for _, t := range m.Graph.Initializers {
		names[t.Name] = true
	}
	for _, n := range m.Graph.Nodes {
		for _, v := range append(n.Inputs, n.Outputs...) {
			names[v] = true
		}
	}
	name := "unused_input"
	for i := 1; names[name]; i++ {
		name = fmt.Sprintf("unused_input_%d", i)
	}
	m.Graph.Inputs = append(m.Graph.Inputs, &onnx.ValueInfo{Name: name,
		Type: &onnx.Type{Kind: onnx.TypeTensor, ElemType: onnx.Float, HasShape: true, Shape: []onnx.Dim{{Value: 1, HasValue: true}}}})
	return name, onnx.WriteFile(path, m, onnx.WriteOptions{})
}

func toORT(t *onnx.Tensor) (ortgo.Value, error) {
	raw, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	if len(t.Dims) == 0 || len(raw) == 0 {
		return nil, fmt.Errorf("scalar or empty tensors are not supported here (dims %v)", t.Dims)
	}
	// A copy: onnxruntime keeps a pointer to the bytes while the value lives.
	data := append([]byte(nil), raw...)
	return ortgo.NewCustomDataTensor(ortgo.NewShape(t.Dims...), data, ortgo.TensorElementDataType(t.DataType))
}

func fromORT(name string, v ortgo.Value) (*onnx.Tensor, error) {
	dims := []int64(v.GetShape())
	var dt onnx.DataType
	var raw []byte
	switch x := v.(type) {
	case *ortgo.Tensor[float32]:
		dt, raw = onnx.Float, make([]byte, 0, 4*len(x.GetData()))
		for _, f := range x.GetData() {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
		}
	case *ortgo.Tensor[float64]:
		dt, raw = onnx.Double, make([]byte, 0, 8*len(x.GetData()))
		for _, f := range x.GetData() {
			raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(f))
		}
	case *ortgo.Tensor[int64]:
		dt, raw = onnx.Int64, make([]byte, 0, 8*len(x.GetData()))
		for _, i := range x.GetData() {
			raw = binary.LittleEndian.AppendUint64(raw, uint64(i))
		}
	case *ortgo.Tensor[int32]:
		dt, raw = onnx.Int32, make([]byte, 0, 4*len(x.GetData()))
		for _, i := range x.GetData() {
			raw = binary.LittleEndian.AppendUint32(raw, uint32(i))
		}
	case *ortgo.Tensor[bool]:
		dt = onnx.Bool
		for _, b := range x.GetData() {
			if b {
				raw = append(raw, 1)
			} else {
				raw = append(raw, 0)
			}
		}
	case *ortgo.Tensor[int8]:
		dt = onnx.Int8
		for _, i := range x.GetData() {
			raw = append(raw, byte(i))
		}
	case *ortgo.Tensor[uint8]:
		dt, raw = onnx.Uint8, append([]byte{}, x.GetData()...)
	default:
		// onnxruntime_go v1.27.0 copies one byte per element for other
		// types (float16, bfloat16), which truncates them: refuse.
		return nil, fmt.Errorf("output type %T: %w", v, onnx.ErrNotSupported)
	}
	return onnx.NewTensor(name, dt, dims, raw)
}
