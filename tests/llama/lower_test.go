package llama

import (
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/accel/tpu"
	"github.com/dstune/dstune/ir"
)

// TestTrainingGraphsLower: the training graphs of the exports and of the
// opset-23 decoders (every op the compositions of Attention,
// RotaryEmbedding and RMSNormalization emit, and their gradients) lower
// to StableHLO for the pjrt backend, one result per gradient.
func TestTrainingGraphsLower(t *testing.T) {
	for _, variant := range variants {
		ref := readReference(t, variant)
		graphs := map[string]*ir.Graph{
			"opset14": importFor(t, filepath.Join("testdata", variant, "opset14.onnx"), ref.tokens),
			"opset23": importModel(t, opset23Llama(t, variant), ref.tokens),
		}
		for name, g := range graphs {
			t.Run(variant+"/"+name, func(t *testing.T) {
				tg, err := ir.TrainingGraph(g, ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: -100}, nil)
				if err != nil {
					t.Fatal(err)
				}
				p, err := tpu.LowerGraph(tg)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Results) != 1+len(g.Params) {
					t.Errorf("%d results, want the loss and %d gradients", len(p.Results), len(g.Params))
				}
			})
		}
	}
}
