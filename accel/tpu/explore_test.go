package tpu

import (
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
)

func TestExplore(t *testing.T) {
	for _, name := range []string{"tiny_gpt", "tiny_bert"} {
		dir := sharedtest.Path(t, "models", name)
		tokens := readTensor(t, filepath.Join(dir, "test_data_set_0", "input_0.pb"))
		want := readTensor(t, filepath.Join(dir, "test_data_set_0", "output_0.pb"))
		g := loadModel(t, "models/"+name+"/model.onnx", map[string]ir.Shape{"tokens": tokens.Shape()})
		p, err := LowerGraph(g)
		if err != nil {
			t.Fatal(err)
		}
		args := []*ir.Tensor{tokens}
		for _, prm := range g.Params {
			args = append(args, prm.Tensor)
		}
		out, err := runProgram(p, args)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(name, ir.Compare(out[0], want, 1e-4, 1e-5))
	}
}
