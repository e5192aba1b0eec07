package onnx_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// ortModels are the models the onnxruntime checks run: the PyTorch
// exports (opset 13 and 17, external data, fp16/int8/If edge cases) and
// the tiny models with reference outputs.
var ortModels = []string{
	"models/tiny_gpt/model.onnx",
	"models/tiny_bert/model.onnx",
	"models/exports/bert_like_op13.onnx",
	"models/exports/cnn_op13.onnx",
	"models/exports/gpt2_like_op13.onnx",
	"models/exports/gpt2_like_op17_extdata.onnx",
	"models/exports/mlp_op13.onnx",
	"models/exports/edge/fp16_init.onnx",
	"models/exports/edge/int8_init.onnx",
	"models/exports/edge/if_subgraph.onnx",
}

func testPath(t *testing.T, rel string) string {
	return sharedtest.Path(t, strings.Split(rel, "/")...)
}

// modelInputs returns test_data_set_0's inputs when the model has them,
// otherwise deterministic made-up inputs for the declared graph inputs
// (symbolic dimensions 3; token ids in [0, 50); masks all ones; floats in
// [-1, 1)). It also returns set 0's reference outputs, if any.
func modelInputs(t *testing.T, m *onnx.Model, path string) (inputs, reference map[string]*onnx.Tensor) {
	t.Helper()
	inputs, reference = map[string]*onnx.Tensor{}, map[string]*onnx.Tensor{}
	set := filepath.Join(filepath.Dir(path), "test_data_set_0")
	if _, err := os.Stat(set); err == nil {
		for i, vi := range m.Graph.Inputs {
			in, err := onnx.ReadTensorFile(filepath.Join(set, fmt.Sprintf("input_%d.pb", i)))
			if err != nil {
				t.Fatal(err)
			}
			inputs[vi.Name] = in
		}
		for i, vi := range m.Graph.Outputs {
			out, err := onnx.ReadTensorFile(filepath.Join(set, fmt.Sprintf("output_%d.pb", i)))
			if err != nil {
				t.Fatal(err)
			}
			reference[vi.Name] = out
		}
		return inputs, reference
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, vi := range m.Graph.Inputs {
		var dims []int64
		for _, d := range vi.Type.Shape {
			if d.HasValue {
				dims = append(dims, d.Value)
			} else {
				dims = append(dims, 3)
			}
		}
		n := int64(1)
		for _, d := range dims {
			n *= d
		}
		var tensor *onnx.Tensor
		var err error
		switch vi.Type.ElemType {
		case onnx.Int64:
			vals := make([]int64, n)
			for i := range vals {
				if strings.Contains(vi.Name, "mask") {
					vals[i] = 1
				} else {
					vals[i] = rng.Int64N(50)
				}
			}
			tensor, err = onnx.FromInt64s(vi.Name, dims, vals)
		case onnx.Float:
			vals := make([]float32, n)
			for i := range vals {
				vals[i] = float32(rng.Float64()*2 - 1)
			}
			tensor, err = onnx.FromFloat32s(vi.Name, dims, vals)
		default:
			t.Fatalf("%s: no input generator for %s", path, vi.Type.ElemType)
		}
		if err != nil {
			t.Fatal(err)
		}
		inputs[vi.Name] = tensor
	}
	return inputs, nil
}

func runORT(t *testing.T, path string, inputs map[string]*onnx.Tensor) map[string]*onnx.Tensor {
	t.Helper()
	out, err := ort.Run(path, inputs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameOutputs requires bit-identical outputs: the same graph with the same
// weights runs the same kernels in the same order.
func sameOutputs(t *testing.T, what string, got, want map[string]*onnx.Tensor) {
	t.Helper()
	for name, w := range want {
		g := got[name]
		if g == nil {
			t.Errorf("%s: no output %q", what, name)
			continue
		}
		if fmt.Sprint(g.Dims) != fmt.Sprint(w.Dims) || g.DataType != w.DataType || !bytes.Equal(g.Raw, w.Raw) {
			t.Errorf("%s: output %q differs (%s %v vs %s %v)", what, name, g.DataType, g.Dims, w.DataType, w.Dims)
		}
	}
}

func maxAbsDiff(t *testing.T, a, b *onnx.Tensor) float64 {
	t.Helper()
	x, err1 := a.Float64s()
	y, err2 := b.Float64s()
	if err1 != nil || err2 != nil || len(x) != len(y) {
		t.Fatalf("cannot compare %v (%v) with %v (%v)", a.Dims, err1, b.Dims, err2)
	}
	worst := 0.0
	for i := range x {
		worst = max(worst, math.Abs(x[i]-y[i]))
	}
	return worst
}

// TestORTRunsWrittenModels: models re-encoded by WriteFile (inline, and
// with external data) load in onnxruntime and give exactly the outputs of
// the original file; the originals match their PyTorch references.
func TestORTRunsWrittenModels(t *testing.T) {
	ort.Need(t)
	for _, rel := range ortModels {
		t.Run(strings.ReplaceAll(rel, "/", "_"), func(t *testing.T) {
			path := testPath(t, rel)
			m, err := onnx.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			inputs, reference := modelInputs(t, m, path)
			base := runORT(t, path, inputs)
			for name, ref := range reference {
				if d := maxAbsDiff(t, base[name], ref); d > 1e-4 {
					t.Errorf("original model: output %q is %g off the reference", name, d)
				}
			}
			dir := t.TempDir()
			for _, variant := range []struct {
				name string
				opts onnx.WriteOptions
			}{
				{"inline", onnx.WriteOptions{ExternalData: onnx.ExternalNever}},
				{"external", onnx.WriteOptions{ExternalData: onnx.ExternalAlways, Threshold: 256}},
			} {
				out := filepath.Join(dir, variant.name+".onnx")
				if err := onnx.WriteFile(out, m, variant.opts); err != nil {
					t.Fatal(err)
				}
				sameOutputs(t, variant.name, runORT(t, out, inputs), base)
			}
		})
	}
}

// modify returns new raw bytes for an initializer: floats scaled by 0.75
// and shifted by 0.01, integers plus one (wrapping), so every value moves.
func modify(t *testing.T, init *onnx.Tensor) []byte {
	t.Helper()
	raw, err := init.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(raw))
	switch init.DataType {
	case onnx.Float:
		for i := 0; i < len(raw); i += 4 {
			v := math.Float32frombits(binary.LittleEndian.Uint32(raw[i:]))
			binary.LittleEndian.PutUint32(out[i:], math.Float32bits(v*0.75+0.01))
		}
	case onnx.Float16:
		for i := 0; i < len(raw); i += 2 {
			v := onnx.HalfToFloat32(binary.LittleEndian.Uint16(raw[i:]))
			binary.LittleEndian.PutUint16(out[i:], onnx.Float32ToHalf(v*0.75+0.01))
		}
	case onnx.Int8:
		for i := range raw {
			out[i] = raw[i] + 1
		}
	default:
		t.Fatalf("modify: %s", init.DataType)
	}
	return out
}

// TestORTPatchedWeights: the in-place patched file and a re-encoded model
// with the same modified weights give onnxruntime identical outputs, which
// differ from the unmodified model's.
func TestORTPatchedWeights(t *testing.T) {
	ort.Need(t)
	for _, rel := range []string{
		"models/tiny_gpt/model.onnx",
		"models/tiny_bert/model.onnx",
		"models/exports/gpt2_like_op13.onnx",
		"models/exports/cnn_op13.onnx",
		"models/exports/edge/fp16_init.onnx",
		"models/exports/edge/int8_init.onnx",
	} {
		t.Run(strings.ReplaceAll(rel, "/", "_"), func(t *testing.T) {
			path := testPath(t, rel)
			m, err := onnx.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			inputs, _ := modelInputs(t, m, path)
			base := runORT(t, path, inputs)

			// Modify the matrices (what DST tunes), not the integer shape
			// constants some exports keep as initializers.
			newValues := map[string][]byte{}
			for _, init := range m.Graph.Initializers {
				if len(init.Dims) == 2 && (init.DataType == onnx.Float || init.DataType == onnx.Float16 || init.DataType == onnx.Int8) {
					newValues[init.Name] = modify(t, init)
				}
			}
			if len(newValues) == 0 {
				t.Fatal("no initializer to modify")
			}
			dir := t.TempDir()
			patched := filepath.Join(dir, "patched.onnx")
			if err := onnx.PatchFile(path, patched, m, newValues); err != nil {
				t.Fatal(err)
			}
			patchedOut := runORT(t, patched, inputs)

			// The same change made by re-encoding: replace the tensors'
			// Raw (the field, never the mapped bytes) and write anew.
			for _, init := range m.Graph.Initializers {
				if v, ok := newValues[init.Name]; ok {
					init.Raw = v
				}
			}
			for _, opts := range []onnx.WriteOptions{
				{ExternalData: onnx.ExternalNever},
				{ExternalData: onnx.ExternalAlways, Threshold: 16},
			} {
				out := filepath.Join(dir, fmt.Sprintf("reencoded-%d.onnx", opts.ExternalData))
				if err := onnx.WriteFile(out, m, opts); err != nil {
					t.Fatal(err)
				}
				sameOutputs(t, out, runORT(t, out, inputs), patchedOut)
			}
			for name, b := range base {
				if d := maxAbsDiff(t, patchedOut[name], b); d < 1e-3 {
					t.Errorf("output %q moved only %g after patching every matrix", name, d)
				}
			}
		})
	}
}

// TestORTEdgeValues: onnxruntime's results on the edge-case exports agree
// with what the decoded values say they compute: y = x·W for the fp16 and
// int8 initializers (after Cast), and the If's then branch for the decoded
// condition.
func TestORTEdgeValues(t *testing.T) {
	ort.Need(t)
	for _, name := range []string{"fp16_init", "int8_init", "if_subgraph"} {
		path := testPath(t, "models/exports/edge/"+name+".onnx")
		m, err := onnx.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		inputs, _ := modelInputs(t, m, path)
		x, _ := inputs["x"].Float64s()
		rows := int(inputs["x"].Dims[0])
		got, _ := runORT(t, path, inputs)["y"].Float64s()
		want := make([]float64, len(x))
		init := m.Graph.Initializers[0]
		switch name {
		case "if_subgraph":
			cond, err := init.Int64s()
			if err != nil || len(cond) != 1 {
				t.Fatalf("condition: %v %v", cond, err)
			}
			branch := "else_branch"
			if cond[0] != 0 {
				branch = "then_branch"
			}
			var op string
			for _, n := range m.Graph.Nodes {
				if g, _ := n.AttrGraph(branch); g != nil {
					op = g.Nodes[0].OpType
				}
			}
			for i, v := range x {
				switch op {
				case "Relu":
					want[i] = max(v, 0)
				case "Neg":
					want[i] = -v
				default:
					t.Fatalf("%s runs %q", branch, op)
				}
			}
		default:
			var w []float64
			if init.DataType == onnx.Int8 {
				ints, _ := init.Int64s()
				for _, v := range ints {
					w = append(w, float64(v))
				}
			} else {
				w, _ = init.Float64s()
			}
			for r := 0; r < rows; r++ {
				for c := 0; c < 4; c++ {
					for k := 0; k < 4; k++ {
						want[r*4+c] += x[r*4+k] * w[k*4+c]
					}
				}
			}
		}
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-5 {
				t.Errorf("%s: y[%d] = %g from onnxruntime, %g from the decoded values", name, i, got[i], want[i])
			}
		}
		m.Close()
	}
}
