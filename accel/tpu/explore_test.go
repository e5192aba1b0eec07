package tpu

import (
	"testing"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
)

func TestExplore(t *testing.T) {
	g := loadModel(t, "models/tiny_gpt/model.onnx", map[string]ir.Shape{"tokens": {2, 24}})
	tg, err := ir.TrainingGraph(g, ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(tg.OpCounts())
	var silos [][]string
	for _, p := range tg.Params {
		silos = append(silos, []string{p.Name})
	}
	p, err := LowerTrainStep(tg, TrainConfig{Optimizer: Optimizer{Kind: AdamW, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, DST: &DST{Eps: 0.01, Silos: silos, Bisection: dst.DefaultBisection}})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(len(p.Text))
}
