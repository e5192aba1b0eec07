package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// TestBorrowedInputs: inputs read only by a Concat or a reference kernel
// (a model's past keys, dstune's own cache under a TensorScatter) are read
// where the caller keeps them instead of copied; inputs a MatMul reads, a
// reshape views or the graph outputs are copied. Two runs on different
// inputs give the reference's results, leave the caller's tensors as they
// were, and leave no kernel holding them.
func TestBorrowedInputs(t *testing.T) {
	b := ir.NewBuilder("g")
	past := b.Input("past", ir.Float32, ir.Shape{1, 2, 5, 3})
	cache := b.Input("cache", ir.Float32, ir.Shape{1, 2, 8, 3})
	rows := b.Input("rows", ir.Float32, ir.Shape{1, 2, 1, 3})
	at := b.Input("at", ir.Int64, ir.Shape{1})
	q := b.Input("q", ir.Float32, ir.Shape{1, 2, 1, 3})
	viewed := b.Input("viewed", ir.Float32, ir.Shape{6})
	out := b.Input("out", ir.Float32, ir.Shape{2})
	b.Output("present", b.Op1(&ir.Concat{Axis: 2}, past, rows))
	full := b.Op1(&ir.TensorScatter{Axis: 2}, cache, rows, at)
	b.Output("scores", b.Op1(&ir.MatMul{}, q, b.Op1(&ir.Transpose{Perm: []int{0, 1, 3, 2}}, full)))
	b.Output("viewed", b.Op1(&ir.Binary{Fn: ir.Add}, b.Op1(&ir.Reshape{Shape: ir.Shape{2, 3}}, viewed), b.Const(ir.ScalarFloat32(1))))
	b.Output("out", out)
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := Compile(g, accel.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	wantBorrowed := map[string]bool{"past": true, "cache": true, "rows": true, "at": true}
	for i, v := range g.Inputs {
		if got := exe.borrowers[i] != nil; got != wantBorrowed[v.Name] {
			t.Errorf("input %q borrowed: %v", v.Name, got)
		}
	}
	rng := rand.New(rand.NewPCG(61, 62))
	for run := range 2 {
		in := make([]*ir.Tensor, len(g.Inputs))
		named := map[string]*ir.Tensor{}
		for i, v := range g.Inputs {
			if v.DType == ir.Int64 {
				in[i] = ir.FromInt64s(v.Shape, []int64{int64(3 + run)})
			} else {
				in[i] = randTensor(rng, ir.Float32, v.Shape, -1, 1)
			}
			named[v.Name] = in[i]
		}
		kept := make([]*ir.Tensor, len(in))
		for i, x := range in {
			kept[i] = x.Clone()
		}
		want, err := ir.Interpret(g, named)
		if err != nil {
			t.Fatal(err)
		}
		got, err := exe.Run(in)
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range g.Outputs {
			if d := ir.Compare(got[i], want[o.Name], 1e-6, 1e-6); !d.OK() {
				t.Fatalf("run %d: output %q: %v", run, o.Name, d)
			}
		}
		for i, x := range in {
			if string(x.Bytes()) != string(kept[i].Bytes()) {
				t.Fatalf("run %d: input %q changed", run, g.Inputs[i].Name)
			}
		}
		for i, rs := range exe.borrowers {
			for _, r := range rs {
				if held := borrowedTensor(r); held != &exe.inputs[i].Bytes()[0] {
					t.Fatalf("run %d: a kernel still reads the caller's %q", run, g.Inputs[i].Name)
				}
			}
		}
	}
}

// borrowedTensor is the first byte of what a borrowing kernel reads.
func borrowedTensor(r borrowedRead) *byte {
	switch k := r.k.(type) {
	case *evalKernel:
		return &k.in[r.read].Bytes()[0]
	case *concatKernel:
		return &k.xs[r.read][0]
	}
	panic("borrowedTensor: a new rebinder")
}
