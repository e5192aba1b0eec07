package cpu

import (
	"math/rand/v2"
	"slices"
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
		return &[]*ir.Tensor{k.cache, k.upd, k.w}[r.read].Bytes()[0]
	}
	panic("borrowedTensor: a new rebinder")
}

// TestUpdateInputs: with the cache input named in UpdateInputs, a
// TensorScatter into it writes the new rows into the caller's tensor and
// the ops reading its result read them there: the outputs are the
// reference's, the caller's cache afterwards is the reference's scattered
// cache, every other input is left as it was, and no kernel keeps the
// caller's tensors. A write past the cache (for any batch entry) fails
// before anything is written. Where the scattered cache must stay apart
// from the input — it is a graph output, another node reads the input, a
// reshape views the result, or the caller did not name the input — the
// run copies, and the caller's cache keeps its rows.
func TestUpdateInputs(t *testing.T) {
	attention := func(batch int) func(b *ir.Builder, expose bool) []*ir.Value {
		return func(b *ir.Builder, expose bool) []*ir.Value {
			cache := b.Input("cache", ir.Float32, ir.Shape{batch, 2, 8, 3})
			rows := b.Input("rows", ir.Float32, ir.Shape{batch, 2, 2, 3})
			at := b.Input("at", ir.Int64, ir.Shape{batch})
			q := b.Input("q", ir.Float32, ir.Shape{batch, 2, 2, 3})
			p := b.Input("p", ir.Float32, ir.Shape{batch, 2, 2, 8})
			full := b.Op1(&ir.TensorScatter{Axis: 2}, cache, rows, at)
			b.Output("scores", b.Op1(&ir.MatMul{}, q, b.Op1(&ir.Transpose{Perm: []int{0, 1, 3, 2}}, full)))
			b.Output("context", b.Op1(&ir.MatMul{}, p, full))
			// A product written transposed: the GEMM computes Cᵀ, its
			// operands swapped.
			b.Output("contextT", b.Op1(&ir.Transpose{Perm: []int{0, 1, 3, 2}}, b.Op1(&ir.MatMul{}, p, full)))
			if expose {
				b.Output("full.cache", full)
			}
			return []*ir.Value{cache, full}
		}
	}
	plain := attention(1)
	for _, c := range []struct {
		name    string
		build   func(b *ir.Builder, expose bool) []*ir.Value
		extra   func(b *ir.Builder, vals []*ir.Value)
		update  []string
		inPlace []string // the inputs a run updates
	}{
		{name: "in place", build: plain, update: []string{"cache"}, inPlace: []string{"cache"}},
		{name: "in place, two batch entries", build: attention(2), update: []string{"cache"}, inPlace: []string{"cache"}},
		{name: "not named", build: plain},
		{name: "result is an output", build: plain, update: []string{"cache"}, extra: func(b *ir.Builder, v []*ir.Value) { b.Output("full", v[1]) }},
		{name: "input read elsewhere", build: plain, update: []string{"cache"}, extra: func(b *ir.Builder, v []*ir.Value) {
			b.Output("doubled", b.Op1(&ir.Binary{Fn: ir.Add}, v[0], v[0]))
		}},
		{name: "result viewed", build: plain, update: []string{"cache"}, extra: func(b *ir.Builder, v []*ir.Value) {
			b.Output("flat", b.Op1(&ir.Binary{Fn: ir.Add}, b.Op1(&ir.Reshape{Shape: ir.Shape{2, 24}}, v[1]), b.Const(ir.ScalarFloat32(1))))
		}},
		{name: "chained", update: []string{"cache", "cache2"}, inPlace: []string{"cache", "cache2"},
			// The first scatter's result is the second's update.
			build: func(b *ir.Builder, expose bool) []*ir.Value {
				vals := plain(b, expose)
				cache2 := b.Input("cache2", ir.Float32, ir.Shape{1, 2, 16, 3})
				at2 := b.Input("at2", ir.Int64, ir.Shape{1})
				full2 := b.Op1(&ir.TensorScatter{Axis: 2}, cache2, vals[1], at2)
				b.Output("sum2", b.Op1(&ir.MatMul{}, b.Input("p2", ir.Float32, ir.Shape{1, 2, 1, 16}), full2))
				if expose {
					b.Output("full.cache2", full2)
				}
				return vals
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			graph := func(expose bool) *ir.Graph {
				b := ir.NewBuilder("g")
				vals := c.build(b, expose)
				if c.extra != nil {
					c.extra(b, vals)
				}
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				return g
			}
			g, ref := graph(false), graph(true)
			exe, err := Compile(g, accel.Options{Threads: 1, UpdateInputs: c.update})
			if err != nil {
				t.Fatal(err)
			}
			scatters := 0
			for _, st := range exe.steps {
				if _, ok := st.k.(*scatterInPlace); ok {
					scatters++
				}
			}
			if scatters != len(c.inPlace) {
				t.Fatalf("%d scatters in place, want %d", scatters, len(c.inPlace))
			}
			rng := rand.New(rand.NewPCG(63, 64))
			// The last positions put the second row past the cache: the
			// run fails, for one batch entry or all.
			for run, pos := range []int64{3, 5, 7} {
				in := make([]*ir.Tensor, len(g.Inputs))
				named := map[string]*ir.Tensor{}
				for i, v := range g.Inputs {
					if v.DType == ir.Int64 {
						at := make([]int64, v.Shape.Size())
						for j := range at {
							at[j] = pos - int64(2*j) // entry 0 runs out first
						}
						in[i] = ir.FromInt64s(v.Shape, at)
					} else {
						in[i] = randTensor(rng, ir.Float32, v.Shape, -1, 1)
					}
					named[v.Name] = in[i].Clone()
				}
				want, wantErr := ir.Interpret(ref, named)
				got, err := exe.Run(in)
				if (err != nil) != (wantErr != nil) {
					t.Fatalf("run %d: error %v, the reference's %v", run, err, wantErr)
				}
				for i, o := range g.Outputs {
					if err != nil {
						break
					}
					if d := ir.Compare(got[i], want[o.Name], 1e-6, 1e-6); !d.OK() {
						t.Fatalf("run %d: output %q: %v", run, o.Name, d)
					}
				}
				for i, x := range in {
					name := g.Inputs[i].Name
					wantIn := named[name]
					if slices.Contains(c.inPlace, name) && err == nil {
						wantIn = want["full."+name]
					}
					if string(x.Bytes()) != string(wantIn.Bytes()) {
						t.Fatalf("run %d (error %v): input %q holds other values", run, err, name)
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
