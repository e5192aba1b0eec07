package cpu

import (
	"fmt"
	"github.com/dstune/dstune/internal/sharedtest/models"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

func compileFor(t *testing.T, model *ir.Model, inputs map[string]*ir.Tensor) (*ir.Graph, *Executable) {
	t.Helper()
	shapes := map[string]ir.Shape{}
	for name, x := range inputs {
		shapes[name] = x.Shape()
	}
	g, err := model.Specialize(ir.Bindings{Shapes: shapes})
	if err != nil {
		t.Fatal(err)
	}
	exe, err := Compile(g, accel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return g, exe
}

// TestTinyModelsMatchPyTorch runs tiny_gpt and tiny_bert on both of their
// test data sets (two input shapes each) and compares the logits with
// PyTorch's within 1e-4 relative (1e-5 absolute near zero), on every ISA.
func TestTinyModelsMatchPyTorch(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		for _, name := range []string{"tiny_gpt", "tiny_bert"} {
			dir := sharedtest.Path(t, "models", name)
			model := models.Read(t, filepath.Join(dir, "model.onnx"))
			for _, set := range []string{"test_data_set_0", "test_data_set_1"} {
				t.Run(name+"/"+set, func(t *testing.T) {
					tokens := models.ReadTensor(t, filepath.Join(dir, set, "input_0.pb"))
					want := models.ReadTensor(t, filepath.Join(dir, set, "output_0.pb"))
					_, exe := compileFor(t, model, map[string]*ir.Tensor{"tokens": tokens})
					got, err := exe.Run([]*ir.Tensor{tokens})
					if err != nil {
						t.Fatal(err)
					}
					d := ir.Compare(got[0], want, 1e-4, 1e-5)
					if !d.OK() {
						t.Fatalf("logits: %v", d)
					}
					t.Logf("logits %v vs PyTorch: %v", want.Shape(), d)
				})
			}
		}
	})
}

// TestTinyGPTStructure checks what import makes explicit: the tied
// embedding / LM-head weight has two uses, every initializer is a
// parameter, and the executor folds the weight transposes into the GEMMs.
func TestTinyGPTStructure(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny_gpt")
	model := models.Read(t, filepath.Join(dir, "model.onnx"))
	tokens := models.ReadTensor(t, filepath.Join(dir, "test_data_set_0", "input_0.pb"))
	g, exe := compileFor(t, model, map[string]*ir.Tensor{"tokens": tokens})
	if len(g.Params) != 28 {
		t.Errorf("%d parameters, want 28", len(g.Params))
	}
	wte := g.Param("wte.weight")
	if wte == nil || len(wte.Uses) != 2 || !wte.Tied() {
		t.Fatalf("wte.weight: %+v, want two uses (embedding Gather and LM head)", wte)
	}
	ops := map[string]bool{}
	for _, u := range wte.Uses {
		ops[u.Node.Op.Name()] = true
	}
	if !ops["Gather"] || !ops["Transpose"] {
		t.Errorf("wte.weight uses: %v, want Gather and Transpose", ops)
	}
	for _, p := range g.Params {
		if p.Name != "wte.weight" && len(p.Uses) != 1 {
			t.Errorf("%s has %d uses", p.Name, len(p.Uses))
		}
	}
	for _, s := range exe.steps {
		if tr, ok := s.node.Op.(*ir.Transpose); ok && len(tr.Perm) == 2 {
			t.Errorf("weight transpose %s still runs", s.node)
		}
	}
	if exe.ArenaBytes >= exe.ValueBytes {
		t.Errorf("memory plan shares nothing: arena %d bytes, values %d", exe.ArenaBytes, exe.ValueBytes)
	}
	t.Logf("arena %d bytes for %d bytes of values; %d steps", exe.ArenaBytes, exe.ValueBytes, len(exe.steps))
}

// TestRunDoesNotAllocate: a compiled tiny_gpt runs without allocating
// (every node has a bound fast kernel or an allocation-free reference).
func TestRunDoesNotAllocate(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny_gpt")
	model := models.Read(t, filepath.Join(dir, "model.onnx"))
	tokens := models.ReadTensor(t, filepath.Join(dir, "test_data_set_0", "input_0.pb"))
	_, exe := compileFor(t, model, map[string]*ir.Tensor{"tokens": tokens})
	in := []*ir.Tensor{tokens}
	if _, err := exe.Run(in); err != nil {
		t.Fatal(err)
	}
	// Profile runs every step again (after rebinding the inputs, whose
	// buffers the plan reuses).
	prof, err := exe.Profile(in)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	for _, p := range prof {
		calls += p.Calls
	}
	if calls != len(exe.steps) {
		t.Errorf("profile counts %d calls for %d steps", calls, len(exe.steps))
	}
	if n := testing.AllocsPerRun(5, func() {
		if _, err := exe.Run(in); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		for _, s := range exe.steps {
			s := s
			if m := testing.AllocsPerRun(2, func() { _ = s.k.run() }); m != 0 {
				t.Logf("%s (%T) allocates %v", s.node, s.k, m)
			}
		}
		t.Errorf("Run allocates %v times, want 0", n)
	}
}

// exportInputs makes inputs for the PyTorch exports: token ids below 100
// (every export's vocabulary is larger), an attention mask with padding in
// the second row, or uniform floats.
func exportInputs(t *testing.T, model *ir.Model) map[string]*ir.Tensor {
	inputs := map[string]*ir.Tensor{}
	for _, in := range model.Inputs {
		shape := make(ir.Shape, len(in.Dims))
		for i, d := range in.Dims {
			switch {
			case d >= 0:
				shape[i] = d
			case i == 0:
				shape[i] = 2 // batch
			default:
				shape[i] = 7 // sequence
			}
		}
		x := ir.NewTensor(in.DType, shape)
		switch {
		case in.DType == ir.Int64 && strings.Contains(in.Name, "mask"):
			for i := range x.Int64s() {
				x.Int64s()[i] = 1
			}
			if shape[0] > 1 { // pad the end of the second row
				row := x.Int64s()[shape[1:].Size():]
				row[len(row)-1], row[len(row)-2] = 0, 0
			}
		case in.DType == ir.Int64:
			for i := range x.Int64s() {
				x.Int64s()[i] = int64(i*37%100 + 1)
			}
		case in.DType == ir.Float32:
			for i := range x.Float32s() {
				x.Float32s()[i] = float32(math.Sin(float64(i)))
			}
		default:
			t.Fatalf("input %q: dtype %s", in.Name, in.DType)
		}
		inputs[in.Name] = x
	}
	return inputs
}

// TestExportsLoadAndRun imports, compiles and runs every PyTorch export in
// models/exports, checking the outputs against the reference interpreter,
// their declared shapes, and that they are finite.
func TestExportsLoadAndRun(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(sharedtest.Path(t, "models", "exports"), "*.onnx"))
	if err != nil || len(files) < 5 {
		t.Fatalf("exports: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			model := models.Read(t, f)
			inputs := exportInputs(t, model)
			g, exe := compileFor(t, model, inputs)
			got, err := accel.RunNamed(exe, inputs)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ir.Interpret(g, inputs)
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range g.Outputs {
				y := got[o.Name]
				// float32 kernels vs the float64-accumulating reference
				if d := ir.Compare(y, want[o.Name], 1e-4, 1e-5); !d.OK() {
					t.Errorf("output %q differs from the reference: %v", o.Name, d)
				}
				declared := model.ONNX.Graph.Outputs[i].Type
				if len(declared.Shape) != len(y.Shape()) {
					t.Errorf("output %q: shape %v, declared rank %d", o.Name, y.Shape(), len(declared.Shape))
				}
				for d, dim := range declared.Shape {
					if dim.HasValue && int(dim.Value) != y.Shape()[d] {
						t.Errorf("output %q: shape %v, declared dim %d = %d", o.Name, y.Shape(), d, dim.Value)
					}
				}
				for j := range y.Len() {
					if v := y.Float64At(j); math.IsNaN(v) || math.IsInf(v, 0) {
						t.Fatalf("output %q element %d is %v", o.Name, j, v)
					}
				}
			}
		})
	}
}

// TestExternalDataBitIdentical: the GPT-2 export with external data gives
// bit-identical outputs to the same model written with its data in the
// file, and agrees (to rounding) with the opset-13 in-file export of the
// same weights, whose LayerNorm is spelled out in primitive ops.
func TestExternalDataBitIdentical(t *testing.T) {
	dir := sharedtest.Path(t, "models", "exports")
	extPath := filepath.Join(dir, "gpt2_like_op17_extdata.onnx")
	ext, err := onnx.ReadFile(extPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	external := 0
	for _, it := range ext.Graph.Initializers {
		if it.External != nil {
			external++
		}
	}
	if external == 0 {
		t.Fatal("the external-data model has no external initializers")
	}
	inFilePath := filepath.Join(t.TempDir(), "inline.onnx")
	if err := onnx.WriteFile(inFilePath, ext, onnx.WriteOptions{ExternalData: onnx.ExternalNever}); err != nil {
		t.Fatal(err)
	}
	run := func(path string) []*ir.Tensor {
		model := models.Read(t, path)
		inputs := exportInputs(t, model)
		g, exe := compileFor(t, model, inputs)
		out, err := accel.RunNamed(exe, inputs)
		if err != nil {
			t.Fatal(err)
		}
		var res []*ir.Tensor
		for _, o := range g.Outputs {
			res = append(res, out[o.Name].Clone())
		}
		return res
	}
	a, b := run(extPath), run(inFilePath)
	for i := range a {
		if string(a[i].Bytes()) != string(b[i].Bytes()) {
			t.Errorf("output %d: external-data and in-file runs differ: %v", i, ir.Compare(a[i], b[i], 0, 0))
		}
	}
	op13 := run(filepath.Join(dir, "gpt2_like_op13.onnx"))
	if d := ir.Compare(a[0], op13[0], 1e-4, 1e-5); !d.OK() {
		t.Errorf("opset-17 external-data export vs opset-13 in-file export: %v", d)
	}
}

// TestEdgeCaseExports: fp16 and int8 initializers load with their values
// (checked against the onnx package's independent decoding); the If model
// inlines the branch its constant condition selects.
func TestEdgeCaseExports(t *testing.T) {
	dir := sharedtest.Path(t, "models", "exports", "edge")
	x := ir.FromFloat32s(ir.Shape{2, 4}, []float32{1, -2, 3, 0.5, -1, 0.25, 2, -3})
	for _, name := range []string{"fp16_init", "int8_init"} {
		t.Run(name, func(t *testing.T) {
			model := models.Read(t, filepath.Join(dir, name+".onnx"))
			init := model.ONNX.Graph.Initializers[0]
			var w []float64
			var err error
			if init.DataType == onnx.Int8 {
				var ints []int64
				ints, err = init.Int64s()
				for _, v := range ints {
					w = append(w, float64(v))
				}
			} else {
				w, err = init.Float64s()
			}
			if err != nil {
				t.Fatal(err)
			}
			_, exe := compileFor(t, model, map[string]*ir.Tensor{"x": x})
			got, err := exe.Run([]*ir.Tensor{x})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				for j := range 4 {
					var want float64
					for k := range 4 {
						want += x.Float64At(i*4+k) * w[k*4+j]
					}
					if g := got[0].Float64At(i*4 + j); math.Abs(g-want) > 1e-5*(1+math.Abs(want)) {
						t.Errorf("y[%d][%d] = %v, want %v", i, j, g, want)
					}
				}
			}
		})
	}
	t.Run("if_subgraph", func(t *testing.T) {
		model := models.Read(t, filepath.Join(dir, "if_subgraph.onnx"))
		cond, err := model.ONNX.Graph.Initializer("cond").Int64s()
		if err != nil {
			t.Fatal(err)
		}
		g, exe := compileFor(t, model, map[string]*ir.Tensor{"x": x})
		got, err := exe.Run([]*ir.Tensor{x})
		if err != nil {
			t.Fatal(err)
		}
		for i := range x.Len() {
			v := x.Float64At(i)
			want := -v // else branch: Neg
			if cond[0] != 0 {
				want = math.Max(v, 0) // then branch: Relu
			}
			if got[0].Float64At(i) != want {
				t.Fatalf("y[%d] = %v, want %v (cond %v, graph:\n%v)", i, got[0].Float64At(i), want, cond[0], g)
			}
		}
	})
}

func TestSpecializeErrors(t *testing.T) {
	model := models.Read(t, filepath.Join(sharedtest.Path(t, "models", "tiny_gpt"), "model.onnx"))
	for _, tc := range []struct {
		b    ir.Bindings
		want string
	}{
		{ir.Bindings{}, `input "tokens": dimension 0 ("batch") is dynamic`},
		{ir.Bindings{Shapes: map[string]ir.Shape{"tokens": {2}}}, "has rank 1, the model declares rank 2"},
		{ir.Bindings{Shapes: map[string]ir.Shape{"tokens": {2, 3}, "nope": {1}}}, `"nope", which is not an input`},
	} {
		_, err := model.Specialize(tc.b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error containing %q", tc.b, err, tc.want)
		}
	}
	// 65 positions exceed the position table (64): a run-time error naming
	// the Gather, not a panic.
	tokens := ir.NewTensor(ir.Int64, ir.Shape{1, 65})
	_, exe := compileFor(t, model, map[string]*ir.Tensor{"tokens": tokens})
	if _, err := exe.Run([]*ir.Tensor{tokens}); err == nil || !strings.Contains(err.Error(), "Gather index 64 out of range [-64, 64)") {
		t.Errorf("65 positions: got %v", err)
	}
}

var _ = fmt.Sprint

// TestExportedGeluIsFused: the erf GELU PyTorch exports as five ops imports
// as one Gelu per layer (tiny_bert has two layers), and the model still
// matches PyTorch (TestTinyModelsMatchPyTorch).
func TestExportedGeluIsFused(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny_bert")
	model := models.Read(t, filepath.Join(dir, "model.onnx"))
	tokens := models.ReadTensor(t, filepath.Join(dir, "test_data_set_0", "input_0.pb"))
	g, _ := compileFor(t, model, map[string]*ir.Tensor{"tokens": tokens})
	ops := g.OpCounts()
	if ops["Gelu"] != 2 || ops["Erf"] != 0 {
		t.Errorf("op counts %v: want 2 Gelu and no Erf", ops)
	}
}
