package cpu

import (
	"github.com/dstune/dstune/internal/sharedtest/models"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// TestWrittenModelsMatchOnnxruntime: models re-written by the onnx package
// (in-file, and with external data) run in onnxruntime and in dstune with
// the same outputs, to rounding.
func TestWrittenModelsMatchOnnxruntime(t *testing.T) {
	ort.Need(t)
	root := sharedtest.Dir(t)
	tiny := func(name string) (string, map[string]*ir.Tensor) {
		dir := filepath.Join(root, "models", name)
		return filepath.Join(dir, "model.onnx"), map[string]*ir.Tensor{"tokens": models.ReadTensor(t, filepath.Join(dir, "test_data_set_0", "input_0.pb"))}
	}
	exports, err := filepath.Glob(filepath.Join(root, "models", "exports", "*.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	type tc struct {
		path   string
		inputs map[string]*ir.Tensor
	}
	var cases []tc
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		p, in := tiny(name)
		cases = append(cases, tc{p, in})
	}
	for _, p := range exports {
		cases = append(cases, tc{path: p})
	}
	for _, c := range cases {
		for _, mode := range []onnx.ExternalDataMode{onnx.ExternalNever, onnx.ExternalAlways} {
			name := filepath.Base(filepath.Dir(c.path)) + "/" + filepath.Base(c.path)
			if mode == onnx.ExternalAlways {
				name += "/external"
			}
			t.Run(name, func(t *testing.T) {
				src, err := onnx.ReadFile(c.path)
				if err != nil {
					t.Fatal(err)
				}
				defer src.Close()
				written := filepath.Join(t.TempDir(), "model.onnx")
				if err := onnx.WriteFile(written, src, onnx.WriteOptions{ExternalData: mode, Threshold: 256}); err != nil {
					t.Fatal(err)
				}
				model := models.Read(t, written)
				inputs := c.inputs
				if inputs == nil {
					inputs = exportInputs(t, model)
				}
				g, exe := compileFor(t, model, inputs)
				got, err := accel.RunNamed(exe, inputs)
				if err != nil {
					t.Fatal(err)
				}
				ortIn := map[string]*onnx.Tensor{}
				for n, x := range inputs {
					if ortIn[n], err = ir.TensorToONNX(n, x); err != nil {
						t.Fatal(err)
					}
				}
				want, err := ort.Run(written, ortIn)
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range g.Outputs {
					w, err := ir.TensorFromONNX(want[o.Name])
					if err != nil {
						t.Fatal(err)
					}
					d := ir.Compare(got[o.Name], w, 1e-4, 1e-5)
					if !d.OK() {
						t.Errorf("output %q vs onnxruntime: %v", o.Name, d)
					}
					t.Logf("output %q %v vs onnxruntime %s: %v", o.Name, w.Shape(), ort.Version(), d)
				}
			})
		}
	}
}
