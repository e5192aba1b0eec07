package cpu

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/kernels"
)

// forISAs runs f once per instruction-set level this machine supports, so
// that every GEMM path behind the executor is exercised.
func forISAs(t *testing.T, f func(t *testing.T)) {
	for _, isa := range kernels.SupportedISAs() {
		t.Run("isa="+isa.String(), func(t *testing.T) {
			defer kernels.SetMaxISA(isa)()
			f(t)
		})
	}
}

func randTensor(rng *rand.Rand, dt ir.DType, shape ir.Shape, lo, hi float64) *ir.Tensor {
	t := ir.NewTensor(dt, shape)
	switch dt {
	case ir.Float32:
		for i := range t.Float32s() {
			t.Float32s()[i] = float32(lo + (hi-lo)*rng.Float64())
		}
	case ir.Float64:
		for i := range t.Float64s() {
			t.Float64s()[i] = lo + (hi-lo)*rng.Float64()
		}
	case ir.Int64:
		for i := range t.Int64s() {
			t.Int64s()[i] = int64(lo) + rng.Int64N(int64(hi-lo))
		}
	case ir.Int32:
		for i := range t.Int32s() {
			t.Int32s()[i] = int32(lo) + int32(rng.Int64N(int64(hi-lo)))
		}
	case ir.Bool:
		for i := range t.Bools() {
			t.Bools()[i] = rng.IntN(2) == 1
		}
	case ir.Float16:
		for i := range t.Uint16s() {
			t.Uint16s()[i] = ir.Float32ToFloat16(float32(lo + (hi-lo)*rng.Float64()))
		}
	default:
		panic("randTensor: " + dt.String())
	}
	return t
}

// checkGraph compiles g for the CPU and compares every output with the
// reference interpreter, with tolerance atol + rtol·|want|.
func checkGraph(t *testing.T, g *ir.Graph, inputs []*ir.Tensor, rtol, atol float64) {
	t.Helper()
	exe, err := Compile(g, accel.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]*ir.Tensor{}
	for i, v := range g.Inputs {
		named[v.Name] = inputs[i]
	}
	want, err := ir.Interpret(g, named)
	if err != nil {
		t.Fatal(err)
	}
	// Run twice: the second run must not see leftovers of the first.
	for run := range 2 {
		got, err := exe.Run(inputs)
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range g.Outputs {
			if d := ir.Compare(got[i], want[o.Name], rtol, atol); !d.OK() {
				t.Fatalf("run %d: output %q: %v", run, o.Name, d)
			}
		}
	}
}

func TestBinaryBroadcasting(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := [][2]ir.Shape{
		{{2, 3, 4}, {2, 3, 4}}, {{2, 3, 4}, {4}}, {{2, 3, 4}, {3, 1}}, {{1}, {2, 3}}, {{2, 1, 4}, {1, 3, 1}},
		{{}, {5}}, {{5}, {}}, {{0, 3}, {3}}, {{3, 4}, {2, 1, 4}}, {{7, 1}, {7, 9}}, {{}, {}},
	}
	for _, fn := range []ir.BinaryFn{ir.Add, ir.Sub, ir.Mul, ir.Div, ir.Pow, ir.Max} {
		for _, s := range shapes {
			t.Run(fmt.Sprintf("%v/%v_%v", fn, s[0], s[1]), func(t *testing.T) {
				b := ir.NewBuilder("g")
				x, y := b.Input("x", ir.Float32, s[0]), b.Input("y", ir.Float32, s[1])
				b.Output("z", b.Op1(&ir.Binary{Fn: fn}, x, y))
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float32, s[0], 0.5, 2), randTensor(rng, ir.Float32, s[1], 0.5, 2)}, 1e-6, 0)
			})
		}
	}
}

func TestUnaryFunctions(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for fn := ir.Neg; fn <= ir.Softplus; fn++ {
		if fn == ir.Not {
			continue
		}
		t.Run(fn.String(), func(t *testing.T) {
			lo, hi := -4.0, 4.0
			if fn == ir.Sqrt || fn == ir.Log {
				lo = 0.01
			}
			b := ir.NewBuilder("g")
			x := b.Input("x", ir.Float32, ir.Shape{3, 37})
			b.Output("y", b.Op1(&ir.Unary{Fn: fn, Alpha: 0.3}, x))
			g, err := b.Graph()
			if err != nil {
				t.Fatal(err)
			}
			// Both compute through float64 and round once: equal up to
			// an ulp.
			checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float32, ir.Shape{3, 37}, lo, hi)}, 2e-7, 1e-7)
		})
	}
}

func TestMatMulShapes(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		cases := [][2]ir.Shape{
			{{4, 5}, {5, 3}}, {{2, 4, 5}, {5, 3}}, {{2, 4, 5}, {2, 5, 3}}, {{5}, {5, 3}}, {{4, 5}, {5}},
			{{5}, {5}}, {{2, 1, 4, 5}, {3, 5, 6}}, {{3, 4, 5}, {1, 5, 6}}, {{1, 4, 5}, {3, 5, 6}},
			{{2, 3, 17, 33}, {2, 3, 33, 9}}, {{0, 4}, {4, 3}}, {{4, 0}, {0, 3}}, {{3, 5}, {2, 5, 4}},
			{{0, 4, 5}, {0, 5, 3}}, {{2, 0, 4, 5}, {2, 0, 5, 3}}, {{0, 4, 5}, {5, 3}}, // no matrices
		}
		for _, s := range cases {
			t.Run(fmt.Sprintf("%v_%v", s[0], s[1]), func(t *testing.T) {
				b := ir.NewBuilder("g")
				x, y := b.Input("x", ir.Float32, s[0]), b.Input("y", ir.Float32, s[1])
				b.Output("z", b.Op1(&ir.MatMul{}, x, y))
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				k := s[0][len(s[0])-1]
				checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float32, s[0], -1, 1), randTensor(rng, ir.Float32, s[1], -1, 1)}, 1e-5, 1e-6*float64(k+1))
			})
		}
	})
}

// TestMatMulFusedTranspose checks that a transpose of either operand's last
// two axes is folded into the GEMM (and skipped when nothing else reads it),
// and that results match the reference.
func TestMatMulFusedTranspose(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, shared := range []bool{false, true} {
			t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
				b := ir.NewBuilder("g")
				x := b.Input("x", ir.Float32, ir.Shape{2, 6, 8})
				w := b.Param("w", randTensor(rng, ir.Float32, ir.Shape{5, 8}, -1, 1))
				at := b.Input("at", ir.Float32, ir.Shape{2, 6, 7})
				wt := b.Op1(&ir.Transpose{Perm: []int{1, 0}}, w)
				y := b.Op1(&ir.MatMul{}, x, wt) // x·wᵀ: transB
				a := b.Op1(&ir.Transpose{Perm: []int{0, 2, 1}}, at)
				z := b.Op1(&ir.MatMul{}, a, y) // atᵀ·y: transA
				b.Output("z", z)
				if shared {
					b.Output("wt", wt)
				}
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				transposes := transposesRun(t, g)
				if want := map[bool]int{false: 0, true: 1}[shared]; transposes != want {
					t.Errorf("%d transposes run, want %d", transposes, want)
				}
				checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float32, ir.Shape{2, 6, 8}, -1, 1), randTensor(rng, ir.Float32, ir.Shape{2, 6, 7}, -1, 1)}, 1e-5, 1e-5)
			})
		}
	})
}

// TestMatMulTransposeChain: attention's keys, [t,b,d] turned to [b,d,t] for
// QKᵀ and transposed back to [b,t,d] for the backward pass's product, are
// both read from the keys as they are stored: neither transpose runs,
// unless something else needs a transposed copy (an Add; a graph output,
// which also needs the transpose it reads); results match the reference.
func TestMatMulTransposeChain(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(13, 14))
		for _, extra := range []string{"none", "add", "output"} {
			t.Run(extra, func(t *testing.T) {
				b := ir.NewBuilder("g")
				k := b.Input("k", ir.Float32, ir.Shape{6, 3, 5})    // [t, b, d]
				q := b.Input("q", ir.Float32, ir.Shape{3, 4, 5})    // [b, s, d]
				dy := b.Input("dy", ir.Float32, ir.Shape{3, 4, 6})  // [b, s, t]
				kt := b.Op1(&ir.Transpose{Perm: []int{1, 2, 0}}, k) // [b, d, t]
				b.Output("scores", b.Op1(&ir.MatMul{}, q, kt))
				back := b.Op1(&ir.Transpose{Perm: []int{0, 2, 1}}, kt) // [b, t, d]
				b.Output("dq", b.Op1(&ir.MatMul{}, dy, back))
				want := 0
				switch extra {
				case "add":
					b.Output("sum", b.Op1(&ir.Binary{Fn: ir.Add}, kt, kt))
					want = 1
				case "output": // back runs, and reads kt
					b.Output("back", back)
					want = 2
				}
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				transposes := transposesRun(t, g)
				if transposes != want {
					t.Errorf("%d transposes run, want %d", transposes, want)
				}
				checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float32, ir.Shape{6, 3, 5}, -1, 1), randTensor(rng, ir.Float32, ir.Shape{3, 4, 5}, -1, 1),
					randTensor(rng, ir.Float32, ir.Shape{3, 4, 6}, -1, 1)}, 1e-5, 1e-5)
			})
		}
	})
}

// transposesRun compiles g and counts the Transpose nodes its executable
// runs.
func transposesRun(t *testing.T, g *ir.Graph) int {
	t.Helper()
	exe, err := Compile(g, accel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range exe.steps {
		if _, ok := s.node.Op.(*ir.Transpose); ok {
			n++
		}
	}
	return n
}

// TestMatMulOutputTranspose: a transpose of a product that nothing else
// reads is written by the GEMM in place — attention's per-head outputs
// back to [t,b,h] ([1,0,2]), and transposes that put the product's
// columns down ([2,0,1], [0,2,1]: the GEMM computes the transposed
// product) — but not where the products share one B, nor where another
// node reads the product; results match the reference, also where the
// operands are transposed views themselves.
func TestMatMulOutputTranspose(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(15, 16))
		cases := []struct {
			name       string
			a, b       ir.Shape
			permA      []int // a transpose of input a first, or nil
			perm       []int // of the product
			alsoRead   bool
			transposes int
		}{
			{"heads", ir.Shape{6, 5, 7}, ir.Shape{6, 7, 4}, nil, []int{1, 0, 2}, false, 0},
			{"columns down", ir.Shape{6, 5, 7}, ir.Shape{6, 7, 4}, nil, []int{2, 0, 1}, false, 0},
			{"matrices transposed", ir.Shape{6, 5, 7}, ir.Shape{6, 7, 4}, nil, []int{0, 2, 1}, false, 0},
			{"transposed operand", ir.Shape{5, 6, 7}, ir.Shape{6, 7, 4}, []int{1, 0, 2}, []int{1, 0, 2}, false, 0},
			{"rank 2", ir.Shape{5, 7}, ir.Shape{7, 4}, nil, []int{1, 0}, false, 0},
			{"shared B", ir.Shape{6, 5, 7}, ir.Shape{7, 4}, nil, []int{1, 0, 2}, false, 1},
			{"product also read", ir.Shape{6, 5, 7}, ir.Shape{6, 7, 4}, nil, []int{1, 0, 2}, true, 1},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				b := ir.NewBuilder("g")
				x, y := b.Input("x", ir.Float32, tc.a), b.Input("y", ir.Float32, tc.b)
				if tc.permA != nil {
					x = b.Op1(&ir.Transpose{Perm: tc.permA}, x)
				}
				p := b.Op1(&ir.MatMul{}, x, y)
				b.Output("z", b.Op1(&ir.Transpose{Perm: tc.perm}, p))
				if tc.alsoRead {
					b.Output("sum", b.Op1(&ir.Binary{Fn: ir.Add}, p, p))
				}
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				if got := transposesRun(t, g); got != tc.transposes {
					t.Errorf("%d transposes run, want %d", got, tc.transposes)
				}
				checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float32, tc.a, -1, 1), randTensor(rng, ir.Float32, tc.b, -1, 1)}, 1e-5, 1e-5)
			})
		}
	})
}

// TestMatMulEpilogue: Add(MatMul(x, w), bias) and an activation of the
// sum run inside the GEMM (those nodes do not run) and give the bits the
// nodes give when they run on their own (the product is also an output
// there, which keeps it from being fused), in float32 and bfloat16
// products, on 1 and 2 threads (the large case splits across workers and
// has more than 256 columns). The activation goes along only when
// something else reads the sum, as training does. Not fused: a bias that
// is not a row, products with a B each, a right operand that is a vector,
// a bias computed after the product.
func TestMatMulEpilogue(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(17, 18))
		cases := []struct {
			name       string
			x, w, bias ir.Shape
			biasFirst  bool
			act        ir.UnaryFn
			hasAct     bool
			actOnly    bool // the activation is the sum's only reader
			biasLate   bool // the bias is computed after the product
			ran        int  // nodes besides the MatMul that run
		}{
			{name: "gelu", x: ir.Shape{3, 40, 24}, w: ir.Shape{24, 70}, bias: ir.Shape{70}, act: ir.Gelu, hasAct: true, ran: 1},
			{name: "large", x: ir.Shape{4, 64, 96}, w: ir.Shape{96, 300}, bias: ir.Shape{300}, act: ir.Gelu, hasAct: true, ran: 1},
			{name: "bias first, tanh gelu", x: ir.Shape{130, 33}, w: ir.Shape{33, 50}, bias: ir.Shape{1, 50}, biasFirst: true, act: ir.GeluTanh, hasAct: true, ran: 1},
			{name: "sigmoid", x: ir.Shape{2, 17, 9}, w: ir.Shape{9, 40}, bias: ir.Shape{40}, act: ir.Sigmoid, hasAct: true, ran: 1},
			{name: "bias only", x: ir.Shape{5, 64, 32}, w: ir.Shape{32, 48}, bias: ir.Shape{48}, ran: 1},
			{name: "activation alone reads the sum", x: ir.Shape{3, 40, 24}, w: ir.Shape{24, 70}, bias: ir.Shape{70}, act: ir.Gelu, hasAct: true, actOnly: true, ran: 1},
			{name: "full-size addend", x: ir.Shape{6, 8}, w: ir.Shape{8, 5}, bias: ir.Shape{6, 5}, act: ir.Gelu, hasAct: true, ran: 3},
			{name: "a B each", x: ir.Shape{3, 6, 8}, w: ir.Shape{3, 8, 5}, bias: ir.Shape{5}, act: ir.Gelu, hasAct: true, ran: 3},
			{name: "vector right operand", x: ir.Shape{3, 5, 7}, w: ir.Shape{7}, bias: ir.Shape{5}, ran: 2},
			{name: "bias computed later", x: ir.Shape{1, 6}, w: ir.Shape{6, 5}, bias: ir.Shape{1, 5}, biasLate: true, ran: 3},
		}
		for _, tc := range cases {
			for _, precision := range []accel.Precision{accel.PrecisionFP32, accel.PrecisionBF16} {
				t.Run(fmt.Sprintf("%s/%s", tc.name, precision), func(t *testing.T) {
					build := func(productOut bool) *ir.Graph {
						b := ir.NewBuilder("g")
						x := b.Input("x", ir.Float32, tc.x)
						w := b.Param("w", randTensor(rand.New(rand.NewPCG(1, 1)), ir.Float32, tc.w, -1, 1))
						var bias *ir.Value
						if tc.biasLate {
							bias = b.Input("z", ir.Float32, tc.bias)
						} else {
							bias = b.Param("bias", randTensor(rand.New(rand.NewPCG(2, 2)), ir.Float32, tc.bias, -1, 1))
						}
						p := b.Op1(&ir.MatMul{}, x, w)
						if tc.biasLate {
							bias = b.Op1(&ir.Unary{Fn: ir.Neg}, bias)
						}
						sum := b.Op1(&ir.Binary{Fn: ir.Add}, p, bias)
						if tc.biasFirst {
							sum = b.Op1(&ir.Binary{Fn: ir.Add}, bias, p)
						}
						if tc.hasAct {
							b.Output("act", b.Op1(&ir.Unary{Fn: tc.act}, sum))
						}
						if !tc.actOnly {
							b.Output("twice", b.Op1(&ir.Binary{Fn: ir.Mul}, sum, sum)) // the sum read again
						}
						if productOut {
							b.Output("product", p)
						}
						g, err := b.Graph()
						if err != nil {
							t.Fatal(err)
						}
						return g
					}
					fused, plain := build(false), build(true)
					in := []*ir.Tensor{randTensor(rng, ir.Float32, tc.x, -2, 2)}
					if tc.biasLate {
						in = append(in, randTensor(rng, ir.Float32, tc.bias, -1, 1))
					}
					for _, threads := range []int{1, 2} {
						opts := accel.Options{Threads: threads, Precision: precision}
						fe, err := Compile(fused, opts)
						if err != nil {
							t.Fatal(err)
						}
						pe, err := Compile(plain, opts)
						if err != nil {
							t.Fatal(err)
						}
						ran := 0
						for _, s := range fe.steps {
							if _, ok := s.node.Op.(*ir.MatMul); !ok {
								ran++
							}
						}
						if ran != tc.ran {
							t.Errorf("threads %d: %d nodes besides the MatMul run, want %d", threads, ran, tc.ran)
						}
						got, err := fe.Run(in)
						if err != nil {
							t.Fatal(err)
						}
						want, err := pe.Run(in)
						if err != nil {
							t.Fatal(err)
						}
						for i, o := range fused.Outputs {
							g, w := got[i].Float32s(), want[i].Float32s()
							for j := range g {
								if math.Float32bits(g[j]) != math.Float32bits(w[j]) {
									t.Fatalf("threads %d: %s[%d] = %v, the nodes alone give %v", threads, o.Name, j, g[j], w[j])
								}
							}
						}
					}
					if precision == accel.PrecisionFP32 {
						checkGraph(t, fused, in, 1e-5, 1e-5)
					}
				})
			}
		}
	})
}

// TestConcat joins tensors on every axis, of float32, int64 and bool
// elements, with an empty input among them, on 1 to 3 threads: the
// reference's bits.
func TestConcat(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	for _, dt := range []ir.DType{ir.Float32, ir.Int64, ir.Bool} {
		for axis := range 3 {
			for _, threads := range []int{1, 2, 3} {
				t.Run(fmt.Sprintf("%s/axis=%d/threads=%d", dt, axis, threads), func(t *testing.T) {
					// Large enough to split across workers wherever
					// there is more than one row to split.
					shapes := []ir.Shape{{64, 48, 32}, {64, 48, 32}, {64, 48, 32}}
					shapes[0][axis], shapes[1][axis], shapes[2][axis] = 7, 0, 13
					b := ir.NewBuilder("g")
					var xs []*ir.Value
					var vals []*ir.Tensor
					for i, s := range shapes {
						xs = append(xs, b.Input(fmt.Sprintf("x%d", i), dt, s))
						vals = append(vals, randTensor(rng, dt, s, -5, 5))
					}
					b.Output("y", b.Op1(&ir.Concat{Axis: axis}, xs...))
					g, err := b.Graph()
					if err != nil {
						t.Fatal(err)
					}
					exe, err := Compile(g, accel.Options{Threads: threads})
					if err != nil {
						t.Fatal(err)
					}
					if _, ok := exe.steps[0].k.(*concatKernel); !ok {
						t.Fatalf("Concat runs on %T", exe.steps[0].k)
					}
					named := map[string]*ir.Tensor{}
					for i, v := range g.Inputs {
						named[v.Name] = vals[i]
					}
					want, err := ir.Interpret(g, named)
					if err != nil {
						t.Fatal(err)
					}
					got, err := exe.Run(vals)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got[0].Bytes(), want["y"].Bytes()) {
						t.Errorf("the bytes differ from the reference's")
					}
				})
			}
		}
	}
}

func TestGemm(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 10))
		const m, k, n = 5, 7, 4
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, c := range []ir.Shape{nil, {}, {n}, {m, n}, {m, 1}, {1, n}} {
					name := fmt.Sprintf("transA=%v/transB=%v/c=%v", ta, tb, c)
					t.Run(name, func(t *testing.T) {
						as, bs := ir.Shape{m, k}, ir.Shape{k, n}
						if ta {
							as = ir.Shape{k, m}
						}
						if tb {
							bs = ir.Shape{n, k}
						}
						b := ir.NewBuilder("g")
						in := []*ir.Value{b.Input("a", ir.Float32, as), b.Input("b", ir.Float32, bs)}
						vals := []*ir.Tensor{randTensor(rng, ir.Float32, as, -1, 1), randTensor(rng, ir.Float32, bs, -1, 1)}
						if c != nil {
							in = append(in, b.Input("c", ir.Float32, c))
							vals = append(vals, randTensor(rng, ir.Float32, c, -1, 1))
						}
						b.Output("y", b.Op1(&ir.Gemm{TransA: ta, TransB: tb, Alpha: 0.75, Beta: 1.5}, in...))
						g, err := b.Graph()
						if err != nil {
							t.Fatal(err)
						}
						checkGraph(t, g, vals, 1e-5, 1e-5)
					})
				}
			}
		}
	})
}

func TestSoftmaxLayerNormGather(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	b := ir.NewBuilder("g")
	x := b.Input("x", ir.Float32, ir.Shape{2, 3, 16})
	ids := b.Input("ids", ir.Int64, ir.Shape{2, 5})
	ids32 := b.Input("ids32", ir.Int32, ir.Shape{4})
	emb := b.Param("emb", randTensor(rng, ir.Float32, ir.Shape{10, 16}, -1, 1))
	scale := b.Param("scale", randTensor(rng, ir.Float32, ir.Shape{16}, 0.5, 1.5))
	bias := b.Param("bias", randTensor(rng, ir.Float32, ir.Shape{16}, -1, 1))
	scale2 := b.Param("scale2", randTensor(rng, ir.Float32, ir.Shape{3, 16}, 0.5, 1.5))
	b.Output("softmax", b.Op1(&ir.Softmax{Axis: 2}, x))
	b.Output("logsoftmax", b.Op1(&ir.Softmax{Axis: 2, Log: true}, x))
	b.Output("softmax_axis1", b.Op1(&ir.Softmax{Axis: 1}, x))
	ln := b.Op(&ir.LayerNorm{Axis: 2, Epsilon: 1e-5}, x, scale, bias)
	b.Output("ln", ln[0])
	b.Output("ln_mean", ln[1])
	b.Output("ln_invstd", ln[2])
	b.Output("ln_nobias", b.Op1(&ir.LayerNorm{Axis: 1, Epsilon: 1e-3}, x, scale2))
	b.Output("gather", b.Op1(&ir.Gather{Axis: 0}, emb, ids))
	b.Output("gather_axis1", b.Op1(&ir.Gather{Axis: 1}, x, ids32))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	idv := randTensor(rng, ir.Int64, ir.Shape{2, 5}, -10, 10)
	checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float32, ir.Shape{2, 3, 16}, -3, 3), idv, randTensor(rng, ir.Int32, ir.Shape{4}, -3, 3)}, 1e-5, 1e-6)

	// An index out of range is a run-time error naming the node, not a
	// panic.
	exe, err := Compile(g, accel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bad := idv.Clone()
	bad.Int64s()[3] = 10
	_, err = exe.Run([]*ir.Tensor{randTensor(rng, ir.Float32, ir.Shape{2, 3, 16}, -3, 3), bad, randTensor(rng, ir.Int32, ir.Shape{4}, 0, 3)})
	if err == nil || !strings.Contains(err.Error(), "Gather index 10 out of range") {
		t.Errorf("out-of-range index: got %v", err)
	}
}

func TestTransposeWhereDtypes(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, dt := range []ir.DType{ir.Float32, ir.Float64, ir.Int64, ir.Bool, ir.Float16} {
		for _, perm := range [][]int{{1, 0, 2}, {2, 0, 1}, {0, 2, 1}, {2, 1, 0}} {
			t.Run(fmt.Sprintf("%v/%v", dt, perm), func(t *testing.T) {
				b := ir.NewBuilder("g")
				x := b.Input("x", dt, ir.Shape{3, 4, 5})
				b.Output("y", b.Op1(&ir.Transpose{Perm: perm}, x))
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				checkGraph(t, g, []*ir.Tensor{randTensor(rng, dt, ir.Shape{3, 4, 5}, -5, 5)}, 0, 0)
			})
		}
	}
	for _, dt := range []ir.DType{ir.Float32, ir.Int64, ir.Bool, ir.Float16} {
		for _, sl := range []*ir.Slice{
			{Starts: []int{1, 0, 4}, Steps: []int{1, 2, -1}, Sizes: []int{2, 2, 5}},
			{Starts: []int{2, 3, 0}, Steps: []int{-2, -1, 3}, Sizes: []int{2, 4, 2}},
			{Starts: []int{0, 0, 0}, Steps: []int{1, 1, 1}, Sizes: []int{3, 0, 5}},
		} {
			t.Run(fmt.Sprintf("slice/%v/%v", dt, sl.Steps), func(t *testing.T) {
				b := ir.NewBuilder("g")
				x := b.Input("x", dt, ir.Shape{3, 4, 5})
				b.Output("y", b.Op1(sl, x))
				g, err := b.Graph()
				if err != nil {
					t.Fatal(err)
				}
				checkGraph(t, g, []*ir.Tensor{randTensor(rng, dt, ir.Shape{3, 4, 5}, -5, 5)}, 0, 0)
			})
		}
	}
	b := ir.NewBuilder("g")
	c := b.Input("c", ir.Bool, ir.Shape{4, 1})
	x := b.Input("x", ir.Float32, ir.Shape{3, 4, 5})
	y := b.Input("y", ir.Float32, ir.Shape{5})
	b.Output("w", b.Op1(&ir.Where{}, c, x, y))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Bool, ir.Shape{4, 1}, 0, 1), randTensor(rng, ir.Float32, ir.Shape{3, 4, 5}, -1, 1), randTensor(rng, ir.Float32, ir.Shape{5}, -1, 1)}, 0, 0)
}

// TestMemoryPlanShares checks that a chain of element-wise ops reuses
// buffers: the arena holds far less than the sum of the values.
func TestMemoryPlanShares(t *testing.T) {
	b := ir.NewBuilder("g")
	x := b.Input("x", ir.Float32, ir.Shape{64, 64})
	v := x
	for range 20 {
		v = b.Op1(&ir.Unary{Fn: ir.Tanh}, v)
		v = b.Op1(&ir.Reshape{Shape: ir.Shape{64 * 64}}, v)
		v = b.Op1(&ir.Reshape{Shape: ir.Shape{64, 64}}, v)
	}
	b.Output("y", v)
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := Compile(g, accel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	one := 64 * 64 * 4
	if exe.ValueBytes != 21*one {
		t.Errorf("ValueBytes = %d, want %d (reshapes are views)", exe.ValueBytes, 21*one)
	}
	if exe.ArenaBytes > 3*one {
		t.Errorf("arena %d bytes for a chain of 64x64 values: want at most 3 buffers (%d)", exe.ArenaBytes, 3*one)
	}
	rng := rand.New(rand.NewPCG(15, 16))
	checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float32, ir.Shape{64, 64}, -1, 1)}, 2e-7, 1e-7)
}

// TestMaxMemory: a graph whose plan needs more than Options.MaxMemory is
// refused before its arena is allocated; one within it compiles.
func TestMaxMemory(t *testing.T) {
	b := ir.NewBuilder("g")
	x := b.Input("x", ir.Float32, ir.Shape{1})
	// 1 → 2²⁸ floats: a GiB the plan holds, never allocated here.
	big := b.Op1(&ir.Expand{Shape: ir.Shape{1 << 28}}, x)
	b.Output("y", b.Op1(&ir.Unary{Fn: ir.Tanh}, big))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = Compile(g, accel.Options{MaxMemory: 1 << 29})
	runtime.ReadMemStats(&after)
	var me *accel.MemoryError
	if !errors.As(err, &me) || me.Limit != 1<<29 || me.Need < 1<<30 {
		t.Fatalf("Compile within 512 MiB: %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("the refused compile allocated %d bytes", alloc)
	}
	if !strings.Contains(err.Error(), "more than the 512.0 MiB allowed") {
		t.Errorf("message: %v", err)
	}
	small := ir.NewBuilder("g")
	sx := small.Input("x", ir.Float32, ir.Shape{64})
	small.Output("y", small.Op1(&ir.Unary{Fn: ir.Tanh}, sx))
	sg, err := small.Graph()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(sg, accel.Options{MaxMemory: 1 << 20}); err != nil {
		t.Errorf("a graph of 512 bytes within 1 MiB: %v", err)
	}
}

// randomSlots draws up to most slots of sizes below size, alive from a
// step in [-1, 29) for fewer than span steps.
func randomSlots(rng *rand.Rand, most, size, span int) []*slot {
	slots := make([]*slot, 1+rng.IntN(most))
	for i := range slots {
		first := rng.IntN(30) - 1
		slots[i] = &slot{size: rng.IntN(size), first: first, last: first + rng.IntN(span)}
	}
	return slots
}

// TestPlanMemoryNoOverlap is a property test of the planner: buffers alive
// at the same time never share bytes.
func TestPlanMemoryNoOverlap(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for trial := range 200 {
		slots := randomSlots(rng, 40, 5000, 10)
		total := planMemory(slots)
		for i, a := range slots {
			if a.offset%planAlign != 0 || a.offset+a.size > total {
				t.Fatalf("trial %d: slot %d at %d size %d, arena %d", trial, i, a.offset, a.size, total)
			}
			for j, b := range slots[:i] {
				timeOverlap := a.first <= b.last && b.first <= a.last
				memOverlap := a.offset < b.offset+b.size && b.offset < a.offset+a.size
				if timeOverlap && memOverlap && a.size > 0 && b.size > 0 {
					t.Fatalf("trial %d: slots %d %+v and %d %+v overlap", trial, i, *a, j, *b)
				}
			}
		}
	}
}

// TestPlanMemoryFirstFit: each slot, largest first, lands at the lowest
// offset clear of the slots placed before it that it is alive with — the
// plan's rule, checked by searching every lower aligned offset.
func TestPlanMemoryFirstFit(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	for trial := range 200 {
		slots := randomSlots(rng, 60, 600, 12)
		n := len(slots)
		planMemory(slots)
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return slots[order[a]].size > slots[order[b]].size })
		for k, i := range order {
			s := slots[i]
			if s.size == 0 {
				continue
			}
			fits := func(off int) bool {
				for _, j := range order[:k] {
					p := slots[j]
					if p.size > 0 && p.first <= s.last && s.first <= p.last && off < p.offset+aligned(p.size) && p.offset < off+aligned(s.size) {
						return false
					}
				}
				return true
			}
			if !fits(s.offset) {
				t.Fatalf("trial %d: slot %d %+v overlaps an earlier one", trial, i, *s)
			}
			for off := 0; off < s.offset; off += planAlign {
				if fits(off) {
					t.Fatalf("trial %d: slot %d %+v placed at %d, but %d fits", trial, i, *s, s.offset, off)
				}
			}
		}
	}
}

// TestParamsUpdateInPlace: writing a parameter's storage (or SetParam)
// between runs changes the next run's result without recompiling.
func TestParamsUpdateInPlace(t *testing.T) {
	b := ir.NewBuilder("g")
	x := b.Input("x", ir.Float32, ir.Shape{2, 3})
	w := b.Param("w", ir.FromFloat32s(ir.Shape{3}, []float32{1, 2, 3}))
	b.Output("y", b.Op1(&ir.Binary{Fn: ir.Mul}, x, w))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := Compile(g, accel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := []*ir.Tensor{ir.FromFloat32s(ir.Shape{2, 3}, []float32{1, 1, 1, 2, 2, 2})}
	check := func(want []float32) {
		t.Helper()
		out, err := exe.Run(in)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range out[0].Float32s() {
			if v != want[i] {
				t.Fatalf("got %v, want %v", out[0].Float32s(), want)
			}
		}
	}
	check([]float32{1, 2, 3, 2, 4, 6})
	p, err := exe.Param("w")
	if err != nil {
		t.Fatal(err)
	}
	p.Float32s()[1] = 10
	check([]float32{1, 10, 3, 2, 20, 6})
	if err := exe.SetParam("w", ir.FromFloat32s(ir.Shape{3}, []float32{0, 0, 1})); err != nil {
		t.Fatal(err)
	}
	check([]float32{0, 0, 1, 0, 0, 2})
	if err := exe.SetParam("w", ir.FromFloat32s(ir.Shape{4}, []float32{0, 0, 1, 1})); err == nil {
		t.Error("SetParam with a wrong shape succeeded")
	}
	if _, err := exe.Param("nope"); err == nil {
		t.Error("Param of an unknown name succeeded")
	}
	if _, err := exe.Run([]*ir.Tensor{ir.FromFloat32s(ir.Shape{3, 2}, make([]float32, 6))}); err == nil {
		t.Error("Run with a wrong input shape succeeded")
	}
}

func TestRegistered(t *testing.T) {
	b, err := accel.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	if b.Name() != "cpu" {
		t.Errorf("name %q", b.Name())
	}
	if _, err := accel.Open("nope"); err == nil || !strings.Contains(err.Error(), "cpu") {
		t.Errorf("unknown backend: %v", err)
	}
}

var _ = math.Inf

// TestParallelKernelsMatchSerial runs tensors large enough to be split
// across workers (odd sizes, so that shares cut runs and rows in the
// middle) with 1, 2 and 3 threads: results must be bit-identical, and
// match the reference.
func TestParallelKernelsMatchSerial(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	s := ir.Shape{3, 129, 257}
	b := ir.NewBuilder("g")
	x := b.Input("x", ir.Float32, s)
	y := b.Input("y", ir.Float32, ir.Shape{129, 1})
	c := b.Input("c", ir.Bool, ir.Shape{257})
	scale := b.Param("scale", randTensor(rng, ir.Float32, ir.Shape{257}, 0.5, 1.5))
	b.Output("add", b.Op1(&ir.Binary{Fn: ir.Add}, x, y))
	b.Output("div", b.Op1(&ir.Binary{Fn: ir.Div}, y, x))
	b.Output("mul", b.Op1(&ir.Binary{Fn: ir.Mul}, x, x))
	b.Output("erf", b.Op1(&ir.Unary{Fn: ir.Erf}, x))
	b.Output("gelu", b.Op1(&ir.Unary{Fn: ir.GeluTanh}, x))
	b.Output("relu", b.Op1(&ir.Unary{Fn: ir.Relu}, x))
	b.Output("where", b.Op1(&ir.Where{}, c, x, y))
	b.Output("softmax", b.Op1(&ir.Softmax{Axis: 2}, x))
	b.Output("ln", b.Op1(&ir.LayerNorm{Axis: 2, Epsilon: 1e-5}, x, scale))
	b.Output("transpose", b.Op1(&ir.Transpose{Perm: []int{2, 0, 1}}, x))
	b.Output("slice", b.Op1(&ir.Slice{Starts: []int{2, 128, 3}, Steps: []int{-1, -1, 2}, Sizes: []int{3, 128, 127}}, x))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	in := []*ir.Tensor{randTensor(rng, ir.Float32, s, -3, 3), randTensor(rng, ir.Float32, ir.Shape{129, 1}, 0.5, 2), randTensor(rng, ir.Bool, ir.Shape{257}, 0, 1)}
	checkThreads(t, g, in, 1e-6, 1e-6)
}

// TestReferenceFallback: ops and dtypes without a fast kernel (float64 and
// int32 MatMul, float16 Add, an int64 Where, a CumSum) run the reference
// implementation on the planned buffers.
func TestReferenceFallback(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	b := ir.NewBuilder("g")
	x := b.Input("x", ir.Float64, ir.Shape{3, 4})
	y := b.Input("y", ir.Float64, ir.Shape{4, 2})
	h := b.Input("h", ir.Float16, ir.Shape{5})
	i := b.Input("i", ir.Int64, ir.Shape{2, 3})
	c := b.Input("c", ir.Bool, ir.Shape{3})
	b.Output("mm64", b.Op1(&ir.MatMul{}, x, y))
	b.Output("add16", b.Op1(&ir.Binary{Fn: ir.Add}, h, h))
	b.Output("where64", b.Op1(&ir.Where{}, c, i, b.Const(ir.ScalarInt64(-7))))
	b.Output("cumsum", b.Op1(&ir.CumSum{Axis: 1, Reverse: true}, i))
	g, err := b.Graph()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := Compile(g, accel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fallbacks := 0
	for _, s := range exe.steps {
		if _, ok := s.k.(*evalKernel); ok {
			fallbacks++
		}
	}
	if fallbacks != 4 {
		t.Errorf("%d reference kernels, want 4", fallbacks)
	}
	checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float64, ir.Shape{3, 4}, -1, 1), randTensor(rng, ir.Float64, ir.Shape{4, 2}, -1, 1),
		randTensor(rng, ir.Float16, ir.Shape{5}, -1, 1), randTensor(rng, ir.Int64, ir.Shape{2, 3}, -9, 9), randTensor(rng, ir.Bool, ir.Shape{3}, 0, 1)}, 0, 0)
	if err := exe.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := exe.Run(nil); err != ErrClosed {
		t.Errorf("Run after Close: %v", err)
	}
}

// TestMatMulStridedOperands: attention's head transposes ([b,t,h,d] →
// [b,h,t,d] and → [b,h,d,t]) are read in place by the GEMMs with strides;
// a transpose that moves the unit-stride axis into the batch cannot be,
// and still runs.
func TestMatMulStridedOperands(t *testing.T) {
	forISAs(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(23, 24))
		b := ir.NewBuilder("g")
		qs := b.Input("q", ir.Float32, ir.Shape{2, 5, 3, 4})
		ks := b.Input("k", ir.Float32, ir.Shape{2, 5, 3, 4})
		vs := b.Input("v", ir.Float32, ir.Shape{2, 5, 3, 4})
		q := b.Op1(&ir.Transpose{Perm: []int{0, 2, 1, 3}}, qs)
		kt := b.Op1(&ir.Transpose{Perm: []int{0, 2, 3, 1}}, ks)
		v := b.Op1(&ir.Transpose{Perm: []int{0, 2, 1, 3}}, vs)
		att := b.Op1(&ir.MatMul{}, q, kt)                        // [2,3,5,5]
		b.Output("o", b.Op1(&ir.MatMul{}, att, v))               // [2,3,5,4]
		odd := b.Op1(&ir.Transpose{Perm: []int{3, 0, 1, 2}}, qs) // [4,2,5,3]: unit stride moved to the batch
		b.Output("odd", b.Op1(&ir.MatMul{}, odd, b.Input("w", ir.Float32, ir.Shape{3, 2})))
		g, err := b.Graph()
		if err != nil {
			t.Fatal(err)
		}
		if transposes := transposesRun(t, g); transposes != 1 {
			t.Errorf("%d transposes run, want 1 (the one with no unit-stride matrix axis)", transposes)
		}
		s := ir.Shape{2, 5, 3, 4}
		checkGraph(t, g, []*ir.Tensor{randTensor(rng, ir.Float32, s, -1, 1), randTensor(rng, ir.Float32, s, -1, 1),
			randTensor(rng, ir.Float32, s, -1, 1), randTensor(rng, ir.Float32, ir.Shape{3, 2}, -1, 1)}, 1e-5, 1e-5)
	})
}
