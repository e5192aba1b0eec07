package cpu

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

// TestBorrowedInputs: inputs read only by a Concat, a MatMul or a
// reference kernel (a model's past keys, dstune's own cache under a
// TensorScatter) are read where the caller keeps them instead of copied;
// inputs a reshape views or the graph outputs are copied. Two runs on different
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
	wantBorrowed := map[string]bool{"past": true, "cache": true, "rows": true, "at": true, "q": true}
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
	case *matmulKernel:
		x := k.a
		if (r.read == 0) == k.swapped {
			x = k.b
		}
		return (*byte)(unsafe.Pointer(&x[0]))
	case *scatterInPlace:
		return &k.cache.Bytes()[0]
	}
	panic("borrowedTensor: a new rebinder")
}

// TestUpdateInputs: with the cache input named in UpdateInputs, a
// TensorScatter into it writes the new rows into the caller's tensor and
// attention's products read them there: the outputs are the reference's,
// the caller's cache afterwards is the reference's scattered cache, every
// other input is left as it was, and no kernel keeps the caller's tensors.
// A write past the cache fails before anything is written. Where the
// scattered cache must stay apart from the input — it is a graph output,
// another node reads the input, a reshape views the result, or the caller
// did not name the input — the run copies, and the caller's cache keeps
// its rows.
func TestUpdateInputs(t *testing.T) {
	type variant struct {
		name    string
		update  bool
		inPlace bool
		extra   func(b *ir.Builder, cache, full *ir.Value)
	}
	variants := []variant{
		{name: "in place", update: true, inPlace: true},
		{name: "not named", update: false},
		{name: "result is an output", update: true, extra: func(b *ir.Builder, _, full *ir.Value) { b.Output("full", full) }},
		{name: "input read elsewhere", update: true, extra: func(b *ir.Builder, cache, _ *ir.Value) {
			b.Output("doubled", b.Op1(&ir.Binary{Fn: ir.Add}, cache, cache))
		}},
		{name: "result viewed", update: true, extra: func(b *ir.Builder, _, full *ir.Value) {
			b.Output("flat", b.Op1(&ir.Binary{Fn: ir.Add}, b.Op1(&ir.Reshape{Shape: ir.Shape{2, 24}}, full), b.Const(ir.ScalarFloat32(1))))
		}},
	}
	for _, vr := range variants {
		t.Run(vr.name, func(t *testing.T) {
			b := ir.NewBuilder("g")
			cache := b.Input("cache", ir.Float32, ir.Shape{1, 2, 8, 3})
			rows := b.Input("rows", ir.Float32, ir.Shape{1, 2, 2, 3})
			at := b.Input("at", ir.Int64, ir.Shape{1})
			q := b.Input("q", ir.Float32, ir.Shape{1, 2, 2, 3})
			p := b.Input("p", ir.Float32, ir.Shape{1, 2, 2, 8})
			scatter := &ir.TensorScatter{Axis: 2}
			full := b.Op1(scatter, cache, rows, at)
			b.Output("scores", b.Op1(&ir.MatMul{}, q, b.Op1(&ir.Transpose{Perm: []int{0, 1, 3, 2}}, full)))
			b.Output("context", b.Op1(&ir.MatMul{}, p, full))
			if vr.extra != nil {
				vr.extra(b, cache, full)
			}
			g, err := b.Graph()
			if err != nil {
				t.Fatal(err)
			}
			opts := accel.Options{Threads: 1}
			if vr.update {
				opts.UpdateInputs = []string{"cache"}
			}
			exe, err := Compile(g, opts)
			if err != nil {
				t.Fatal(err)
			}
			inPlace := false
			for _, st := range exe.steps {
				_, ok := st.k.(*scatterInPlace)
				inPlace = inPlace || ok
			}
			if inPlace != vr.inPlace {
				t.Fatalf("scatter in place: %v, want %v", inPlace, vr.inPlace)
			}
			rng := rand.New(rand.NewPCG(63, 64))
			for run, pos := range []int64{3, 5, 7} {
				in := make([]*ir.Tensor, len(g.Inputs))
				named := map[string]*ir.Tensor{}
				for i, v := range g.Inputs {
					if v.DType == ir.Int64 {
						in[i] = ir.FromInt64s(v.Shape, []int64{pos})
					} else {
						in[i] = randTensor(rng, ir.Float32, v.Shape, -1, 1)
					}
					named[v.Name] = in[i]
				}
				kept := make([]*ir.Tensor, len(in))
				for i, x := range in {
					kept[i] = x.Clone()
				}
				scattered := ir.NewTensor(ir.Float32, cache.Shape)
				scatterErr := scatter.Eval([]*ir.Tensor{kept[0], kept[1], kept[2]}, []*ir.Tensor{scattered})
				var want map[string]*ir.Tensor
				if scatterErr == nil {
					if want, err = ir.Interpret(g, named); err != nil {
						t.Fatal(err)
					}
				}
				got, err := exe.Run(in)
				if (err != nil) != (scatterErr != nil) {
					t.Fatalf("run %d: error %v, the reference's %v", run, err, scatterErr)
				}
				if err == nil {
					for i, o := range g.Outputs {
						if d := ir.Compare(got[i], want[o.Name], 1e-6, 1e-6); !d.OK() {
							t.Fatalf("run %d: output %q: %v", run, o.Name, d)
						}
					}
				}
				for i, x := range in {
					wantIn := kept[i]
					if i == 0 && vr.inPlace && err == nil {
						wantIn = scattered
					}
					if string(x.Bytes()) != string(wantIn.Bytes()) {
						t.Fatalf("run %d (error %v): input %q holds other rows", run, err, g.Inputs[i].Name)
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
		})
	}
}
