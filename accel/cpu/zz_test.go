package cpu

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
)

func TestZZSteps(t *testing.T) {
	model := readModel(t, filepath.Join(sharedtest.Dir(t), "bench/gpt_bench.onnx"))
	g, _ := model.Specialize(ir.Bindings{Shapes: map[string]ir.Shape{"tokens": {16, 128}}})
	tg, err := ir.TrainingGraph(g, ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
	if err != nil { t.Fatal(err) }
	exe, _ := Compile(tg, accel.Options{})
	fmt.Println("arena MB", exe.ArenaBytes>>20)
	for _, s := range exe.steps {
		if _, ok := s.k.(nopKernel); ok { continue }
		if !strings.Contains(s.node.Origin, "layers.1") && !strings.Contains(s.node.Origin, "loss") && !strings.Contains(s.node.Origin, "lnf") && !strings.Contains(s.node.Origin, "tok") { continue }
		ins := []string{}
		for _, v := range s.node.Inputs { if v != nil { ins = append(ins, v.Shape.String()) } }
		extra := ""
		if f, ok := exe_fused(s); ok { extra = f }
		fmt.Printf("%-22s %-60.60s %v -> %v %s\n", s.node.Op.Name(), s.node.Origin, ins, s.node.Outputs[0].Shape, extra)
	}
}

func exe_fused(s step) (string, bool) {
	if k, ok := s.k.(*matmulKernel); ok { return fmt.Sprintf("tA=%v tB=%v m=%d n=%d k=%d batch=%d", k.transA, k.transB, k.m, k.n, k.k, k.batch), true }
	return "", false
}
