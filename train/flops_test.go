package train

import (
	"fmt"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// TestProductFLOPs counts the products of a small graph, each by hand:
// 2·m·n·k per matrix, broadcast batches multiplied out, vectors as
// matrices of one row or column, Gemm's transposes, nothing for the rest.
func TestProductFLOPs(t *testing.T) {
	b := ir.NewBuilder("g")
	in := func(shape ...int) *ir.Value {
		return b.Input("x", ir.Float32, ir.Shape(shape))
	}
	want := map[*ir.Value]float64{}
	add := func(v *ir.Value, flops float64) { want[v] = flops }
	add(b.Op1(&ir.MatMul{}, in(2, 3, 4), in(4, 5)), 2*(2*3*5*4))                            // batch 2, [3,4]·[4,5]
	add(b.Op1(&ir.MatMul{}, in(2, 1, 3, 4), in(1, 6, 4, 5)), 2*6*(2*3*5*4))                 // batch broadcast to 2×6
	add(b.Op1(&ir.MatMul{}, in(4), in(4, 5)), 2*5*4)                                        // vector · matrix
	add(b.Op1(&ir.MatMul{}, in(3, 4), in(4)), 2*3*4)                                        // matrix · vector
	add(b.Op1(&ir.Gemm{TransA: true, TransB: true, Alpha: 1}, in(4, 3), in(5, 4)), 2*3*5*4) // Aᵀ[3,4]·Bᵀ[4,5]
	add(b.Op1(&ir.Gemm{Alpha: 1, Beta: 1}, in(3, 7), in(7, 2), in(2)), 2*3*2*7)
	add(b.Op1(&ir.Binary{Fn: ir.Add}, in(3, 4), in(3, 4)), 0)
	// A convolution: each of y's 2·6·4·4 elements sums (8/2)·3·3 terms;
	// its gradients as many.
	conv := ir.Conv{Strides: []int{1, 1}, Pads: []int{1, 1, 1, 1}, Dilations: []int{1, 1}, Group: 2}
	add(b.Op1(&conv, in(2, 8, 4, 4), in(6, 4, 3, 3)), 2*(2*6*4*4)*(4*3*3))
	add(b.Op1(&ir.ConvGradInput{Conv: conv, InputShape: ir.Shape{2, 8, 4, 4}}, in(2, 6, 4, 4), in(6, 4, 3, 3)), 2*(2*6*4*4)*(4*3*3))
	add(b.Op1(&ir.ConvGradWeight{Conv: conv, WeightShape: ir.Shape{6, 4, 3, 3}}, in(2, 6, 4, 4), in(2, 8, 4, 4)), 2*(2*6*4*4)*(4*3*3))
	var total float64
	i := 0
	for v, w := range want {
		b.Output(fmt.Sprintf("y%d", i), v)
		i++
		total += w
	}
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range g.Nodes {
		if got := ProductFLOPs(n); got != want[n.Outputs[0]] {
			t.Errorf("%s %v·%v: %v FLOPs, want %v", n.Op.Name(), n.Inputs[0].Shape, n.Inputs[1].Shape, got, want[n.Outputs[0]])
		}
	}
	if got := GraphProductFLOPs(g); got != total {
		t.Errorf("graph: %v FLOPs, want %v", got, total)
	}
}

// TestTrainingGraphFLOPs: tiny_gpt's training step (2 layers of width 64,
// MLP 4·64, vocabulary 256) multiplies three times its forward products
// (every product's two gradients; the first layer's input is an
// embedding, which trains too), counted here from the architecture.
func TestTrainingGraphFLOPs(t *testing.T) {
	m, err := onnx.ReadFile(sharedtest.Path(t, "models", "tiny_gpt", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewModelSource(model, ModelSourceOptions{Task: TaskLM})
	if err != nil {
		t.Fatal(err)
	}
	const B, T, d, layers, vocab = 3, 20, 64, 2, 256
	g, err := src.TrainingGraph(BatchShape{B: B, T: T})
	if err != nil {
		t.Fatal(err)
	}
	n := float64(B * T)     // tokens
	perLayer := 2*n*d*3*d + // Q, K, V projections
		2*n*d*d + // output projection
		2*(2*n*d*4*d) + // MLP up and down
		2*(2*B*T*T*d) // Q·Kᵀ and softmax·V over all heads
	forward := layers*perLayer + 2*n*d*vocab // + LM head
	if got := GraphProductFLOPs(g); got != 3*forward {
		t.Errorf("training step: %v FLOPs, want 3 × %v", got, forward)
	}
}
