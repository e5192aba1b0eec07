package ir

import (
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/onnx"
)

// TestEinsumLowering: an imported Einsum is lowered to sums, transposes,
// reshapes and batched MatMuls where it can be, and computes what the
// Einsum op's reference computes, with its gradients; diagonals and
// labels broadcast from 1 keep the Einsum op.
func TestEinsumLowering(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct {
		eq      string
		shapes  []Shape
		lowered bool
	}{
		{"bhqd,bhkd->bhqk", []Shape{{2, 3, 4, 5}, {2, 3, 6, 5}}, true}, // attention scores
		{"bhqk,bhkd->bhqd", []Shape{{2, 3, 4, 6}, {2, 3, 6, 5}}, true},
		{"bij,bjk->b", []Shape{{2, 3, 4}, {2, 4, 5}}, true},
		{"ij,jk,kl->il", []Shape{{2, 3}, {3, 4}, {4, 2}}, true},
		{"bci,oi->bco", []Shape{{2, 3, 5}, {4, 5}}, true},
		{"i,j->ij", []Shape{{3}, {4}}, true},
		{"i,i->", []Shape{{5}, {5}}, true},
		{"ij->ji", []Shape{{3, 4}}, true},
		{"ij->", []Shape{{3, 4}}, true},
		{"abc,cd->dba", []Shape{{2, 3, 4}, {4, 5}}, true},
		{"...ij,...jk->...ik", []Shape{{2, 3, 4, 5}, {2, 3, 5, 2}}, true},
		{"ij,jk", []Shape{{2, 3}, {3, 4}}, true}, // implicit output
		{"iaj,ajb,bc->ic", []Shape{{2, 3, 4}, {3, 4, 2}, {2, 5}}, true},
		{"ii->i", []Shape{{4, 4}}, false},                 // a diagonal
		{"ij,ij->ij", []Shape{{3, 4}, {1, 4}}, false},     // i broadcast from 1
		{"bii,bi->bi", []Shape{{2, 3, 3}, {2, 3}}, false}, // a diagonal
	} {
		t.Run(c.eq, func(t *testing.T) {
			var ins []nodeInput
			var weights []nodeInput
			ranks := make([]int, len(c.shapes))
			tensors := make([]*Tensor, len(c.shapes))
			for i, s := range c.shapes {
				ranks[i] = len(s)
				tensors[i] = randTensor(rng, Float64, s, -1, 1)
				ins = append(ins, feed(tensors[i]))
				weights = append(weights, weight(tensors[i]))
			}
			op, err := ParseEinsum(c.eq, ranks)
			if err != nil {
				t.Fatal(err)
			}
			want, err := EvalOp(op, tensors...)
			if err != nil {
				t.Fatal(err)
			}
			attrs := []*onnx.Attribute{stringAttr("equation", c.eq)}
			m, feeds := oneNodeModel(t, 17, "Einsum", attrs, ins, 1)
			got, g := runModel(t, m, feeds)
			einsums := 0
			for _, n := range g.Nodes {
				if _, ok := n.Op.(*Einsum); ok {
					einsums++
				}
			}
			if (einsums == 0) != c.lowered {
				t.Errorf("%d Einsum nodes after import, lowered %v wanted", einsums, c.lowered)
			}
			if d := Compare(got[g.Outputs[0].Name], want[0], 1e-12, 1e-12); !d.OK() {
				t.Errorf("lowered einsum vs the reference: %v", d)
			}
			wm, wfeeds := oneNodeModel(t, 17, "Einsum", attrs, weights, 1)
			checkImportedGrad(t, wm, wfeeds, 1e-6)
		})
	}
}

// TestEinsumLoweringPlan: operands sharing no label are not multiplied out
// first (ab,cd,bd->ac contracts bd with either operand, never building
// the [a,b,c,d] outer product), and products with nothing to sum are an
// element-wise Mul, not a MatMul per element.
func TestEinsumLoweringPlan(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range []struct {
		eq          string
		shapes      []Shape
		maxElements int // of any value the lowered graph computes
		matmuls     int
	}{
		{"ab,cd,bd->ac", []Shape{{6, 7}, {8, 9}, {7, 9}}, 8 * 9, 2},
		{"bij,bij->bij", []Shape{{4, 5, 6}, {4, 5, 6}}, 4 * 5 * 6, 0},
		{"bij,j->bij", []Shape{{4, 5, 6}, {6}}, 4 * 5 * 6, 0},
		{"i,j->ij", []Shape{{3}, {4}}, 12, 0},
	} {
		var ins []nodeInput
		for _, s := range c.shapes {
			ins = append(ins, feed(randTensor(rng, Float64, s, -1, 1)))
		}
		m, feeds := oneNodeModel(t, 17, "Einsum", []*onnx.Attribute{stringAttr("equation", c.eq)}, ins, 1)
		_, g := runModel(t, m, feeds)
		matmuls, largest := 0, 0
		for _, n := range g.Nodes {
			if _, ok := n.Op.(*MatMul); ok {
				matmuls++
			}
			for _, o := range n.Outputs {
				largest = max(largest, o.Shape.Size())
			}
		}
		if matmuls != c.matmuls || largest > c.maxElements {
			t.Errorf("%s: %d MatMuls (want %d), a value of %d elements (want at most %d)", c.eq, matmuls, c.matmuls, largest, c.maxElements)
		}
	}
}
