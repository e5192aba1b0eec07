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
// registers, a few chosen ones and a model calling model-local functions
// (the corpus mutates their attributes and shapes).
func FuzzImport(f *testing.F) {
	dir := sharedtest.Dir(f)
	for _, b := range firstTestOfEachOp(f, filepath.Join(dir, "onnx-backend", "node")) {
		f.Add(b)
	}
	{
		for _, name := range []string{"test_reshape_negative_dim", "test_slice_neg_steps", "test_gather_negative_indices", "test_split_variable_parts_2d_opset18",
			"test_einsum_batch_diagonal", "test_maxpool_2d_ceil", "test_conv_with_strides_padding", "test_range_float_type_positive_delta",
			"test_expand_dim_changed", "test_layer_normalization_4d_axis1", "test_top_k", "test_softmax_axis_0", "test_cumsum_2d_axis_1",
			"test_constantofshape_int_zeros", "test_sce_mean_weight_ii_3d", "test_reduce_sum_empty_axes_input_noop", "test_trilu_neg",
			"test_edge_pad", "test_reflect_pad", "test_constant_pad_axes", "test_center_crop_pad_crop_and_pad", "test_tile",
			"test_depthtospace_crd_mode_example", "test_spacetodepth", "test_scatter_elements_with_reduction_max", "test_scatternd_add",
			"test_gathernd_example_int32_batch_dim1", "test_tensorscatter_circular", "test_compress_0", "test_nonzero_example",
			"test_unique_sorted_with_axis_3d", "test_reversesequence_batch", "test_col2im_pads",
			"test_loop11", "test_loop16_seq_none", "test_scan9_sum", "test_scan_sum", "test_if_opt", "test_sequence_map_add_2_sequences",
			"test_split_to_sequence_2", "test_string_split_maxsplit", "test_strnormalizer_export_monday_casesensintive_upper",
			"test_ai_onnx_ml_tree_ensemble_set_membership", "test_ai_onnx_ml_label_encoder_tensor_mapping", "test_tfidfvectorizer_tf_uniandbigrams_skip5",
			"test_adam_multiple", "test_optional_get_element_optional_sequence"} {
			if b, err := os.ReadFile(filepath.Join(dir, "onnx-backend", "node", name, "model.onnx")); err == nil {
				f.Add(b)
			}
		}
	}
	if m, _ := functionModel(f); m != nil { // model-local functions
		b, err := onnx.Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
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
		composites := map[string]*Datum{}
		valueInputs := map[string]bool{}
		for _, n := range model.ValueInputs() {
			valueInputs[n] = true
		}
		// tensorFor is a zero tensor of info's declared shape (dynamic
		// and large dimensions 2), nil when too large.
		tensorFor := func(info *InputInfo) *Tensor {
			s := Shape{}
			for _, d := range info.Dims {
				if d < 0 || d > 64 {
					d = 2
				}
				s = append(s, d)
			}
			if s.Size() > 1<<16 || info.DType == InvalidDType {
				return nil
			}
			return NewTensor(info.DType, s)
		}
		for _, in := range model.Inputs {
			if in.Kind != TensorDatum {
				// Two elements of a sequence, the value of an optional.
				if in.Elem == nil || in.Elem.Kind != TensorDatum {
					return
				}
				e := tensorFor(in.Elem)
				if e == nil {
					return
				}
				d := OptionalOf(TensorOf(e))
				if in.Kind == SequenceDatum {
					d = SequenceOf(TensorOf(e), TensorOf(e))
				}
				if !valueInputs[in.Name] {
					d = d.Fed(in.Name, map[string]*Tensor{})
				}
				composites[in.Name] = d
				continue
			}
			x := tensorFor(&in)
			if x == nil {
				return
			}
			if valueInputs[in.Name] {
				values[in.Name] = x
			} else {
				shapes[in.Name] = x.Shape()
			}
		}
		g, err := model.Specialize(Bindings{Shapes: shapes, Values: values, Composites: composites})
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
