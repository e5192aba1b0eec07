package ir

import (
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/ort"
	"github.com/dstune/dstune/onnx"
)

// nbitsCase is a MatMulNBits weight made from known codes: codes[n][k],
// scales[n][block], zero points[n][block] (absent: the midpoint default),
// optionally given as floats.
type nbitsCase struct {
	name                string
	k, n, bits, block   int
	zeroPoints, floatZP bool
	bias                bool
	dtype               DType
}

type nbitsModel struct {
	model  *onnx.Model
	a      *Tensor
	weight [][]float64 // dequantized, [n][k], from the codes
	bias   []float64
}

// pack stores bits-bit codes low bits first, as MatMulNBits reads them.
func pack(codes []int, bits, bytes int) []byte {
	out := make([]byte, bytes)
	for j, c := range codes {
		bit := j * bits
		out[bit/8] |= byte(c << (bit % 8))
	}
	return out
}

func makeNBits(t *testing.T, c nbitsCase, rng *rand.Rand) nbitsModel {
	t.Helper()
	blocks := (c.k + c.block - 1) / c.block
	blob := c.block * c.bits / 8
	maxCode := 1<<c.bits - 1
	var b []byte
	scales := NewTensor(Float32, Shape{c.n, blocks})
	zpCodes := make([][]int, c.n)
	zpFloat := NewTensor(Float32, Shape{c.n, blocks})
	var zpPacked []byte
	perRow := (blocks*c.bits + 7) / 8
	codes := make([][]int, c.n)
	for n := range c.n {
		codes[n] = make([]int, c.k)
		for k := range codes[n] {
			codes[n][k] = rng.IntN(maxCode + 1)
		}
		for blk := range blocks {
			row := make([]int, c.block) // the tail of the last block is padding
			for j := range row {
				if k := blk*c.block + j; k < c.k {
					row[j] = codes[n][k]
				}
			}
			b = append(b, pack(row, c.bits, blob)...)
			scales.Float32s()[n*blocks+blk] = float32(0.01 + 0.05*rng.Float64())
		}
		zpCodes[n] = make([]int, blocks)
		for blk := range zpCodes[n] {
			zpCodes[n][blk] = rng.IntN(maxCode + 1)
			zpFloat.Float32s()[n*blocks+blk] = float32(zpCodes[n][blk]) + float32(rng.Float64()-0.5)
		}
		zpPacked = append(zpPacked, pack(zpCodes[n], c.bits, perRow)...)
	}
	m := nbitsModel{weight: make([][]float64, c.n)}
	for n := range c.n {
		m.weight[n] = make([]float64, c.k)
		for k := range c.k {
			s := n*blocks + k/c.block
			zp := float64(int(1) << (c.bits - 1))
			switch {
			case c.zeroPoints && c.floatZP:
				zp = float64(zpFloat.Float32s()[s])
			case c.zeroPoints:
				zp = float64(zpCodes[n][k/c.block])
			}
			m.weight[n][k] = (float64(codes[n][k]) - zp) * float64(scales.Float32s()[s])
		}
	}
	bT, err := onnx.NewTensor("B", onnx.Uint8, []int64{int64(c.n), int64(blocks), int64(blob)}, b)
	if err != nil {
		t.Fatal(err)
	}
	inits := []*onnx.Tensor{bT, initializer(t, "scales", Convert(scales, c.dtype))}
	inputs := []string{"A", "B", "scales", "", "", ""}
	if c.zeroPoints {
		inputs[3] = "zero_points"
		if c.floatZP {
			inits = append(inits, initializer(t, "zero_points", Convert(zpFloat, c.dtype)))
		} else {
			zt, err := onnx.NewTensor("zero_points", onnx.Uint8, []int64{int64(c.n), int64(perRow)}, zpPacked)
			if err != nil {
				t.Fatal(err)
			}
			inits = append(inits, zt)
		}
	}
	if c.bias {
		bias := randTensor(rng, Float32, Shape{c.n}, -1, 1)
		inputs[5] = "bias"
		inits = append(inits, initializer(t, "bias", Convert(bias, c.dtype)))
		m.bias = make([]float64, c.n)
		for i := range m.bias {
			m.bias[i] = Convert(bias, c.dtype).Float64At(i)
		}
	}
	for len(inputs) > 3 && inputs[len(inputs)-1] == "" {
		inputs = inputs[:len(inputs)-1]
	}
	nd := &onnx.Node{Name: "mm", OpType: "MatMulNBits", Domain: "com.microsoft", Inputs: inputs, Outputs: []string{"Y"},
		Attributes: []*onnx.Attribute{intAttr("K", int64(c.k)), intAttr("N", int64(c.n)), intAttr("bits", int64(c.bits)), intAttr("block_size", int64(c.block))}}
	m.a = randTensor(rng, c.dtype, Shape{2, 3, c.k}, -1, 1)
	g := &onnx.Graph{Name: "nbits", Nodes: []*onnx.Node{nd}, Initializers: inits,
		Inputs:  []*onnx.ValueInfo{valueInfo("A", c.dtype.ONNX(), 2, 3, c.k)},
		Outputs: []*onnx.ValueInfo{valueInfo("Y", c.dtype.ONNX(), 2, 3, c.n)}}
	m.model = &onnx.Model{IRVersion: 8, OpsetImports: []onnx.OpsetID{{Version: 21}, {Domain: "com.microsoft", Version: 1}}, Graph: g}
	return m
}

var nbitsCases = []nbitsCase{
	{name: "4 bit", k: 40, n: 5, bits: 4, block: 16, zeroPoints: true, bias: true, dtype: Float32},
	{name: "4 bit midpoint", k: 64, n: 3, bits: 4, block: 32, dtype: Float32},
	{name: "4 bit float zero points", k: 48, n: 4, bits: 4, block: 16, zeroPoints: true, floatZP: true, dtype: Float32},
	{name: "8 bit", k: 33, n: 6, bits: 8, block: 16, zeroPoints: true, bias: true, dtype: Float32},
	{name: "2 bit", k: 70, n: 3, bits: 2, block: 32, zeroPoints: true, dtype: Float32},
	{name: "float16", k: 40, n: 5, bits: 4, block: 16, zeroPoints: true, bias: true, dtype: Float16},
}

// TestMatMulNBitsDequantizes: the imported node is one MatMul with a
// constant weight (plus the bias Add), and its output is A·Wᵀ + bias with
// W dequantized from the codes the test packed.
func TestMatMulNBitsDequantizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, c := range nbitsCases {
		t.Run(c.name, func(t *testing.T) {
			m := makeNBits(t, c, rng)
			g, err := FromONNX(m.model, nil)
			if err != nil {
				t.Fatal(err)
			}
			mm := g.Nodes[0]
			if _, ok := mm.Op.(*MatMul); !ok || mm.Inputs[1].Kind != ConstValue || mm.Inputs[1].DType != c.dtype {
				t.Fatalf("want a MatMul with a constant %s weight:\n%v", c.dtype, g)
			}
			out, err := Interpret(g, map[string]*Tensor{"A": m.a})
			if err != nil {
				t.Fatal(err)
			}
			y := out["Y"]
			tol := 1e-5
			if c.dtype == Float16 {
				tol = 1e-2
			}
			for row := range 6 {
				for n := range c.n {
					want := 0.0
					for k := range c.k {
						want += m.a.Float64At(row*c.k+k) * m.weight[n][k]
					}
					if m.bias != nil {
						want += m.bias[n]
					}
					if got := y.Float64At(row*c.n + n); math.Abs(got-want) > tol*(1+math.Abs(want)) {
						t.Fatalf("Y[%d][%d] = %v, want %v", row, n, got, want)
					}
				}
			}
		})
	}
}

// TestMatMulNBitsMatchesOnnxruntime runs the float32 cases in
// onnxruntime.
func TestMatMulNBitsMatchesOnnxruntime(t *testing.T) {
	ort.Need(t)
	rng := rand.New(rand.NewPCG(33, 34))
	for _, c := range nbitsCases {
		if c.dtype != Float32 {
			continue // the onnxruntime bridge reads back float32 only
		}
		t.Run(c.name, func(t *testing.T) {
			m := makeNBits(t, c, rng)
			path := filepath.Join(t.TempDir(), "nbits.onnx")
			if err := onnx.WriteFile(path, m.model, onnx.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			a, err := TensorToONNX("A", m.a)
			if err != nil {
				t.Fatal(err)
			}
			res, err := ort.Run(path, map[string]*onnx.Tensor{"A": a})
			if err != nil {
				t.Fatal(err)
			}
			want, err := TensorFromONNX(res["Y"])
			if err != nil {
				t.Fatal(err)
			}
			out, _ := runModel(t, m.model, map[string]*Tensor{"A": m.a})
			got := out["Y"]
			if !got.Shape().Equal(want.Shape()) {
				t.Fatalf("shape %v, onnxruntime %v", got.Shape(), want.Shape())
			}
			for i := range got.Len() {
				if g, w := got.Float64At(i), want.Float64At(i); math.Abs(g-w) > 1e-5*(1+math.Abs(w)) {
					t.Fatalf("Y[%d] = %v, onnxruntime %s gives %v", i, g, ort.Version(), w)
				}
			}
		})
	}
}

// TestMatMulNBitsTrainsTheBias: the dequantized weight is a constant,
// the bias a parameter whose MSE gradient is 2/count·Σ_rows (y − t).
func TestMatMulNBitsTrainsTheBias(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	m := makeNBits(t, nbitsCases[0], rng)
	model, err := NewModel(m.model)
	if err != nil {
		t.Fatal(err)
	}
	g, err := model.Specialize(Bindings{})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := TrainingGraph(g, LossSpec{Kind: MeanSquaredError}, nil)
	if err != nil {
		t.Fatal(err)
	}
	targets := randTensor(rng, Float32, Shape{2, 3, 5}, -1, 1)
	res, err := Interpret(tg, map[string]*Tensor{"A": m.a, TargetsInput: targets})
	if err != nil {
		t.Fatal(err)
	}
	if res[GradPrefix+"scales"] != nil {
		t.Errorf("the scales got a gradient; the dequantized weight should be a constant")
	}
	fwd, err := Interpret(g, map[string]*Tensor{"A": m.a})
	if err != nil {
		t.Fatal(err)
	}
	grad := res[GradPrefix+"bias"]
	if grad == nil {
		t.Fatalf("no gradient for the bias; outputs %v", tg.Outputs)
	}
	for n := range 5 {
		want := 0.0
		for row := range 6 {
			want += 2.0 / 30 * (fwd["Y"].Float64At(row*5+n) - targets.Float64At(row*5+n))
		}
		if got := grad.Float64At(n); math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
			t.Errorf("d L/d bias[%d] = %v, want %v", n, got, want)
		}
	}
}

func TestMatMulNBitsErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	base := nbitsCase{k: 40, n: 5, bits: 4, block: 16, zeroPoints: true, bias: true, dtype: Float32}
	set := func(nd *onnx.Node, name string, v int64) {
		for _, a := range nd.Attributes {
			if a.Name == name {
				a.I = v
				return
			}
		}
		nd.Attributes = append(nd.Attributes, intAttr(name, v))
	}
	cases := []struct {
		name        string
		edit        func(m *onnx.Model)
		want        string
		unsupported bool
	}{
		{"3 bits", func(m *onnx.Model) { set(m.Graph.Nodes[0], "bits", 3) }, "bits 3", true},
		{"9 bits", func(m *onnx.Model) { set(m.Graph.Nodes[0], "bits", 9) }, "bits is 9", false},
		{"block size", func(m *onnx.Model) { set(m.Graph.Nodes[0], "block_size", 24) }, "block_size", false},
		{"K mismatch", func(m *onnx.Model) { set(m.Graph.Nodes[0], "K", 41) }, "K = 41", false},
		{"N mismatch", func(m *onnx.Model) { set(m.Graph.Nodes[0], "N", 4) }, "B is uint8[5,3,8]", false},
		{"zero N", func(m *onnx.Model) { set(m.Graph.Nodes[0], "N", 0) }, "N 0", false},
		{"prepacked", func(m *onnx.Model) { set(m.Graph.Nodes[0], "weight_prepacked", 1) }, "weight_prepacked", true},
		{"scales count", func(m *onnx.Model) {
			m.Graph.Initializers[1] = initializer(t, "scales", NewTensor(Float32, Shape{5, 2}))
		}, "scales", false},
		{"zero point bytes", func(m *onnx.Model) {
			m.Graph.Initializers[2] = initializer(t, "zero_points", NewTensor(Uint8, Shape{5, 1}))
		}, "zero_points", false},
		{"g_idx", func(m *onnx.Model) {
			g := NewTensor(Int32, Shape{40})
			for k := range 40 {
				g.Int32s()[k] = int32(k / 16)
			}
			m.Graph.Initializers = append(m.Graph.Initializers, initializer(t, "g_idx", g))
			m.Graph.Nodes[0].Inputs[4] = "g_idx"
		}, "g_idx", true},
		{"computed B", func(m *onnx.Model) {
			m.Graph.Nodes = append([]*onnx.Node{node("Identity", []string{"A"}, []string{"Bx"})}, m.Graph.Nodes...)
			m.Graph.Nodes[1].Inputs[1] = "Bx"
		}, "must be known at import", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := makeNBits(t, base, rng)
			c.edit(m.model)
			_, err := FromONNX(m.model, nil)
			if err == nil {
				t.Fatalf("no error, want one mentioning %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			if c.unsupported != errors.Is(err, ErrNotSupported) {
				t.Errorf("error %q: errors.Is(ErrNotSupported) = %v, want %v", err, !c.unsupported, c.unsupported)
			}
		})
	}
}
