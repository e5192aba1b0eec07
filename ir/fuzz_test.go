package ir

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
)

// FuzzImport feeds arbitrary model bytes through decoding, import and the
// reference interpreter: whatever the file says, import must return an
// error or a valid graph, never panic or allocate without bound. The seeds
// are node-test models, the first of every operator the importer
// registers and a few chosen ones (the corpus mutates their attributes
// and shapes).
func FuzzImport(f *testing.F) {
	dir := sharedtest.Dir(f)
	for _, b := range firstTestOfEachOp(f, filepath.Join(dir, "onnx-backend", "node")) {
		f.Add(b)
	}
	{
		for _, name := range []string{"test_reshape_negative_dim", "test_slice_neg_steps", "test_gather_negative_indices", "test_split_variable_parts_2d_opset18",
			"test_einsum_batch_diagonal", "test_maxpool_2d_ceil", "test_conv_with_strides_padding", "test_range_float_type_positive_delta",
			"test_expand_dim_changed", "test_layer_normalization_4d_axis1", "test_top_k", "test_softmax_axis_0", "test_cumsum_2d_axis_1",
			"test_constantofshape_int_zeros", "test_sce_mean_weight_ii_3d", "test_reduce_sum_empty_axes_input_noop", "test_trilu_neg"} {
			if b, err := os.ReadFile(filepath.Join(dir, "onnx-backend", "node", name, "model.onnx")); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := onnx.Decode(data, "")
		if err != nil {
			return
		}
		model, err := NewModel(m)
		if err != nil {
			return
		}
		shapes := map[string]Shape{}
		values := map[string]*Tensor{}
		valueInputs := map[string]bool{}
		for _, n := range model.ValueInputs() {
			valueInputs[n] = true
		}
		for _, in := range model.Inputs {
			if in.Kind != TensorDatum {
				return // sequence and optional inputs need bound elements
			}
			s := Shape{}
			for _, d := range in.Dims {
				if d < 0 || d > 64 {
					d = 2
				}
				s = append(s, d)
			}
			if s.Size() > 1<<16 {
				return
			}
			if valueInputs[in.Name] {
				values[in.Name] = NewTensor(in.DType, s)
			} else {
				shapes[in.Name] = s
			}
		}
		g, err := model.Specialize(Bindings{Shapes: shapes, Values: values})
		if err != nil {
			return
		}
		// Valid but large graphs are fine; the interpreter run is only
		// for small ones (a fuzz input must finish quickly).
		work := 0
		for _, n := range g.Nodes {
			for _, v := range append(append([]*Value{}, n.Inputs...), n.Outputs...) {
				if v != nil {
					work += v.Shape.Size()
				}
			}
		}
		if work > 1<<16 {
			return
		}
		inputs := map[string]*Tensor{}
		for _, v := range g.Inputs {
			if v.Shape.Size() > 1<<16 {
				return
			}
			inputs[v.Name] = NewTensor(v.DType, v.Shape)
		}
		_, _ = Interpret(g, inputs)
	})
}

// firstTestOfEachOp returns the model bytes of the first node test (in
// name order) whose graph uses each registered operator.
func firstTestOfEachOp(f *testing.F, root string) [][]byte {
	dirs, _ := filepath.Glob(filepath.Join(root, "test_*"))
	sort.Strings(dirs)
	seen := map[string]bool{}
	var out [][]byte
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "model.onnx"))
		if err != nil {
			continue
		}
		m, err := onnx.Decode(b, "")
		if err != nil {
			f.Fatalf("%s: %v", d, err)
		}
		fresh := false
		for _, n := range m.Graph.Nodes {
			key := opKey(n.Domain, n.OpType)
			if _, ok := importers[key]; ok && !seen[key] {
				seen[key], fresh = true, true
			}
		}
		if fresh {
			out = append(out, b)
		}
	}
	return out
}
