package onnx

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
)

// testdataModels lists every .onnx file in the shared test data.
func testdataModels(t testing.TB) []string {
	t.Helper()
	dir := sharedtest.Dir(t)
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".onnx") {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(paths)
	if len(paths) < 600 {
		t.Fatalf("found only %d .onnx files under %s", len(paths), dir)
	}
	return paths
}

func relName(t testing.TB, p string) string {
	r, err := filepath.Rel(sharedtest.Dir(t), p)
	if err != nil {
		return p
	}
	return r
}

// TestReadAllTestdata loads every model and every test-data .pb file and
// checks them against each other: the input_N/output_N files must match
// the element types and static dimensions the graph declares, so a
// misread field shows up as a disagreement between two independent files.
func TestReadAllTestdata(t *testing.T) {
	for _, mmap := range []bool{false, true} {
		t.Run(fmt.Sprintf("mmap=%v", mmap), func(t *testing.T) {
			if mmap {
				defer setMmapThreshold(0)()
			} else {
				defer setMmapThreshold(1 << 62)()
			}
			for _, p := range testdataModels(t) {
				m, err := ReadFile(p)
				if err != nil {
					t.Errorf("%s: %v", relName(t, p), err)
					continue
				}
				if m.Graph == nil || len(m.Graph.Nodes) == 0 || len(m.Graph.Outputs) == 0 {
					t.Errorf("%s: empty graph", relName(t, p))
				}
				if len(m.OpsetImports) == 0 {
					t.Errorf("%s: no opset imports", relName(t, p))
				}
				checkDataSets(t, m, filepath.Dir(p))
				if err := m.Close(); err != nil {
					t.Errorf("%s: Close: %v", relName(t, p), err)
				}
			}
		})
	}
}

func setMmapThreshold(v int64) (restore func()) {
	old := mmapThreshold
	mmapThreshold = v
	return func() { mmapThreshold = old }
}

// checkDataSets compares test_data_set_*/input_N.pb and output_N.pb with
// the declared graph inputs (those without initializers) and outputs.
func checkDataSets(t *testing.T, m *Model, dir string) {
	t.Helper()
	sets, _ := filepath.Glob(filepath.Join(dir, "test_data_set_*"))
	if len(sets) == 0 {
		return
	}
	inits := map[string]bool{}
	for _, init := range m.Graph.Initializers {
		inits[init.Name] = true
	}
	var inputs []*ValueInfo
	for _, in := range m.Graph.Inputs {
		if !inits[in.Name] {
			inputs = append(inputs, in)
		}
	}
	for _, set := range sets {
		for _, kind := range []struct {
			prefix string
			infos  []*ValueInfo
		}{{"input", inputs}, {"output", m.Graph.Outputs}} {
			files, _ := filepath.Glob(filepath.Join(set, kind.prefix+"_*.pb"))
			if len(files) != len(kind.infos) {
				// Optional inputs may be left out at the end.
				if kind.prefix != "input" || len(files) > len(kind.infos) {
					t.Errorf("%s: %d %s files, graph declares %d", relName(t, set), len(files), kind.prefix, len(kind.infos))
					continue
				}
			}
			for i := range files {
				p := filepath.Join(set, fmt.Sprintf("%s_%d.pb", kind.prefix, i))
				vi := kind.infos[i]
				if vi.Type == nil || vi.Type.Kind == TypeTensor {
					tensor, err := ReadTensorFile(p)
					if err != nil {
						t.Errorf("%s: %v", relName(t, p), err)
						continue
					}
					checkAgainstValueInfo(t, relName(t, p), tensor, vi)
					continue
				}
				v, err := ReadValueFile(p, vi.Type.Kind)
				if err != nil {
					t.Errorf("%s: %v", relName(t, p), err)
					continue
				}
				checkAgainstType(t, relName(t, p), v, vi.Name, vi.Type)
				if _, err := ReadTensorFile(p); err == nil {
					t.Errorf("%s: %s value also reads as a tensor", relName(t, p), kindName(vi.Type.Kind))
				}
			}
		}
	}
}

// checkAgainstType checks a value read from a test-data file against the
// type the graph declares for it, element by element.
func checkAgainstType(t *testing.T, name string, v *Value, valueName string, typ *Type) {
	t.Helper()
	if v.Kind != typ.Kind {
		t.Errorf("%s: a %s, graph %q declares a %s", name, kindName(v.Kind), valueName, kindName(typ.Kind))
		return
	}
	switch typ.Kind {
	case TypeTensor:
		checkAgainstValueInfo(t, name, v.Tensor, &ValueInfo{Name: valueName, Type: typ})
	case TypeSequence, TypeOptional:
		if typ.Kind == TypeOptional && len(v.Elems) > 1 {
			t.Errorf("%s: optional with %d values", name, len(v.Elems))
		}
		for i, e := range v.Elems {
			if typ.Elem != nil {
				checkAgainstType(t, fmt.Sprintf("%s[%d]", name, i), e, valueName, typ.Elem)
			}
		}
	}
}

func checkAgainstValueInfo(t *testing.T, name string, tensor *Tensor, vi *ValueInfo) {
	t.Helper()
	if vi.Type == nil {
		return
	}
	if tensor.DataType != vi.Type.ElemType {
		t.Errorf("%s: data type %s, graph %q declares %s", name, tensor.DataType, vi.Name, vi.Type.ElemType)
	}
	if !vi.Type.HasShape {
		return
	}
	if len(tensor.Dims) != len(vi.Type.Shape) {
		t.Errorf("%s: dims %v, graph %q declares rank %d", name, tensor.Dims, vi.Name, len(vi.Type.Shape))
		return
	}
	for i, d := range vi.Type.Shape {
		if d.HasValue && d.Value != tensor.Dims[i] {
			t.Errorf("%s: dims %v, graph %q declares %v", name, tensor.Dims, vi.Name, vi.Type.Shape)
		}
	}
	if _, err := tensor.Bytes(); err != nil && tensor.DataType != String {
		t.Errorf("%s: Bytes: %v", name, err)
	}
}

// TestTinyModelsMatchInfo checks initializer names and shapes against
// info.json (written by PyTorch's side) and the gradient files' names and
// shapes against the initializers.
func TestTinyModelsMatchInfo(t *testing.T) {
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		dir := sharedtest.Path(t, "models", name)
		var info struct {
			Opset        int64
			Initializers [][2]json.RawMessage
			NParameters  int64 `json:"n_parameters"`
		}
		raw, err := os.ReadFile(filepath.Join(dir, "info.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &info); err != nil {
			t.Fatal(err)
		}
		m, err := ReadFile(filepath.Join(dir, "model.onnx"))
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Opset(""); got != info.Opset {
			t.Errorf("%s: opset %d, info.json says %d", name, got, info.Opset)
		}
		byName := map[string]*Tensor{}
		for _, init := range m.Graph.Initializers {
			byName[init.Name] = init
		}
		var params int64
		for _, e := range info.Initializers {
			var iname string
			var dims []int64
			if err := json.Unmarshal(e[0], &iname); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(e[1], &dims); err != nil {
				t.Fatal(err)
			}
			init := byName[iname]
			if init == nil {
				t.Errorf("%s: no initializer %q", name, iname)
				continue
			}
			if !slices.Equal(init.Dims, dims) || init.DataType != Float {
				t.Errorf("%s: %q is %s %v, info.json says float32 %v", name, iname, init.DataType, init.Dims, dims)
			}
			n, _ := init.NumElements()
			params += n
			if init.RawOffset < 0 || int(init.RawOffset)+len(init.Raw) > len(m.buf) || &m.buf[init.RawOffset] != &init.Raw[0] {
				t.Errorf("%s: %q: Raw is not a view of the file at RawOffset %d", name, iname, init.RawOffset)
			}
			grad, err := ReadTensorFile(filepath.Join(dir, "grads", "grad_"+iname+".pb"))
			if err != nil {
				t.Error(err)
				continue
			}
			if grad.Name != iname || !slices.Equal(grad.Dims, dims) {
				t.Errorf("%s: grad file for %q names %q %v", name, iname, grad.Name, grad.Dims)
			}
		}
		if params != info.NParameters {
			t.Errorf("%s: %d parameters, info.json says %d", name, params, info.NParameters)
		}
		m.Close()
	}
}

// TestBenchModelsMatchInfo checks the 21 MB benchmark models against
// bench_info.json: node count and initializer shapes.
func TestBenchModelsMatchInfo(t *testing.T) {
	var info struct {
		Models map[string]struct {
			File         string
			Nodes        int
			Parameters   int64
			Initializers [][2]json.RawMessage
		}
	}
	raw, err := os.ReadFile(sharedtest.Path(t, "bench", "bench_info.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatal(err)
	}
	for name, mi := range info.Models {
		m, err := ReadFile(sharedtest.Path(t, "bench", mi.File))
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Graph.Nodes) != mi.Nodes {
			t.Errorf("%s: %d nodes, bench_info.json says %d", name, len(m.Graph.Nodes), mi.Nodes)
		}
		shapes := map[string][]int64{}
		for _, init := range m.Graph.Initializers {
			shapes[init.Name] = init.Dims
		}
		for _, e := range mi.Initializers {
			var iname string
			var dims []int64
			json.Unmarshal(e[0], &iname)
			json.Unmarshal(e[1], &dims)
			if got, ok := shapes[iname]; !ok || !slices.Equal(got, dims) {
				t.Errorf("%s: initializer %q %v, bench_info.json says %v", name, iname, got, dims)
			}
		}
		m.Close()
	}
}

// TestExternalDataMatchesInFile: the GPT-2-like export with external data
// holds the same initializer values as the in-file one.
func TestExternalDataMatchesInFile(t *testing.T) {
	for _, mmap := range []bool{false, true} {
		t.Run(fmt.Sprintf("mmap=%v", mmap), func(t *testing.T) {
			if mmap {
				defer setMmapThreshold(0)()
			}
			inFile, err := ReadFile(sharedtest.Path(t, "models", "exports", "gpt2_like_op13.onnx"))
			if err != nil {
				t.Fatal(err)
			}
			defer inFile.Close()
			ext, err := ReadFile(sharedtest.Path(t, "models", "exports", "gpt2_like_op17_extdata.onnx"))
			if err != nil {
				t.Fatal(err)
			}
			defer ext.Close()
			// Same weights, same initializer order; the exporter's
			// generated names ("onnx::MatMul_321") differ between the two.
			want, got := inFile.Graph.Initializers, ext.Graph.Initializers
			if len(want) != len(got) {
				t.Fatalf("%d initializers, in-file model has %d", len(got), len(want))
			}
			external := 0
			for i, init := range got {
				w := want[i]
				if init.External != nil {
					external++
					if init.RawOffset != -1 {
						t.Errorf("%q: external tensor with RawOffset %d", init.Name, init.RawOffset)
					}
				}
				generated := strings.HasPrefix(init.Name, "onnx::") && strings.HasPrefix(w.Name, "onnx::")
				if init.Name != w.Name && !generated {
					t.Errorf("initializer %d is %q, in-file %q", i, init.Name, w.Name)
				}
				gotBytes, err1 := init.Bytes()
				wantBytes, err2 := w.Bytes()
				if err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
				if init.DataType != w.DataType || !slices.Equal(init.Dims, w.Dims) || string(gotBytes) != string(wantBytes) {
					t.Errorf("initializer %q differs from in-file %q: %s %v vs %s %v", init.Name, w.Name, init.DataType, init.Dims, w.DataType, w.Dims)
				}
			}
			if external < len(got)/2 {
				t.Errorf("only %d of %d initializers use external data", external, len(got))
			}
		})
	}
}

// TestEdgeCases: fp16 and int8 initializers decode to the same matrix (both
// exports hold the same weights in two types), and the If model keeps both
// branches as subgraphs.
func TestEdgeCases(t *testing.T) {
	values := map[string][]float64{}
	for _, name := range []string{"fp16_init", "int8_init"} {
		m, err := ReadFile(sharedtest.Path(t, "models", "exports", "edge", name+".onnx"))
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Graph.Initializers) != 1 {
			t.Fatalf("%s: %d initializers", name, len(m.Graph.Initializers))
		}
		init := m.Graph.Initializers[0]
		var vals []float64
		switch init.DataType {
		case Float16:
			vals, err = init.Float64s()
		case Int8:
			var ints []int64
			ints, err = init.Int64s()
			for _, v := range ints {
				vals = append(vals, float64(v))
			}
		default:
			t.Fatalf("%s: initializer type %s", name, init.DataType)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(init.Dims, []int64{4, 4}) {
			t.Errorf("%s: dims %v", name, init.Dims)
		}
		values[name] = vals
	}
	if !reflect.DeepEqual(values["fp16_init"], values["int8_init"]) {
		t.Errorf("fp16 values %v differ from int8 values %v", values["fp16_init"], values["int8_init"])
	}

	m, err := ReadFile(sharedtest.Path(t, "models", "exports", "edge", "if_subgraph.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	var ifNode *Node
	for _, n := range m.Graph.Nodes {
		if n.OpType == "If" {
			ifNode = n
		}
	}
	if ifNode == nil {
		t.Fatal("no If node")
	}
	ops := map[string]string{}
	for _, branch := range []string{"then_branch", "else_branch"} {
		g, err := ifNode.AttrGraph(branch)
		if err != nil || g == nil {
			t.Fatalf("%s: %v", branch, err)
		}
		if len(g.Nodes) != 1 || len(g.Outputs) != 1 {
			t.Fatalf("%s: %d nodes, %d outputs", branch, len(g.Nodes), len(g.Outputs))
		}
		ops[branch] = g.Nodes[0].OpType
	}
	if ops["then_branch"] == ops["else_branch"] {
		t.Errorf("both branches run %s", ops["then_branch"])
	}
}

func TestSequenceAndOptionalFilesNotSupported(t *testing.T) {
	for _, test := range []string{"test_identity_sequence", "test_identity_opt"} {
		for _, f := range []string{"input_0.pb", "output_0.pb"} {
			_, err := ReadTensorFile(sharedtest.Path(t, "onnx-backend", "node", test, "test_data_set_0", f))
			if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "SequenceProto or OptionalProto") {
				t.Errorf("%s/%s: got %v, want a not-supported SequenceProto/OptionalProto error", test, f, err)
			}
		}
	}
}

// TestFileBacked: the raw bytes of every initializer, in the model file
// or in external data, lie in a file mapping when ReadFile maps, and in
// none when it reads; memory of another buffer never does.
func TestFileBacked(t *testing.T) {
	for _, name := range []string{"gpt2_like_op13.onnx", "gpt2_like_op17_extdata.onnx"} {
		for _, mmap := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/mmap=%v", name, mmap), func(t *testing.T) {
				if mmap {
					defer setMmapThreshold(0)()
				} else {
					defer setMmapThreshold(1 << 62)()
				}
				m, err := ReadFile(sharedtest.Path(t, "models", "exports", name))
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				n := 0
				for _, it := range m.Graph.Initializers {
					if len(it.Raw) == 0 {
						continue
					}
					n++
					if got := m.FileBacked(it.Raw); got != mmap {
						t.Errorf("%q: FileBacked %v, want %v", it.Name, got, mmap)
					}
					if m.FileBacked(append([]byte(nil), it.Raw...)) {
						t.Errorf("%q: a copy of its bytes is file-backed", it.Name)
					}
				}
				if n == 0 {
					t.Fatal("no initializer holds raw bytes")
				}
			})
		}
	}
}
