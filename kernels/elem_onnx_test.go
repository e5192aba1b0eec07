package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
)

// ONNX backend conformance tests (testdata/onnx-backend/node) for the operators these
// kernels implement: each test's inputs go through the kernel, and the result
// is compared with the expected outputs ONNX ships (computed by its numpy
// reference). The few protobuf fields needed are read by hand, so that this
// package's tests depend on nothing but the standard library.

// pbField is one field of a protobuf message.
type pbField struct {
	num  int
	wire int
	v    uint64 // varint, fixed32 or fixed64 value
	b    []byte // length-delimited contents
}

func pbFields(t *testing.T, msg []byte) []pbField {
	t.Helper()
	var out []pbField
	for len(msg) > 0 {
		key, n := binary.Uvarint(msg)
		if n <= 0 {
			t.Fatalf("bad protobuf key")
		}
		msg = msg[n:]
		f := pbField{num: int(key >> 3), wire: int(key & 7)}
		switch f.wire {
		case 0:
			f.v, n = binary.Uvarint(msg)
			if n <= 0 {
				t.Fatalf("bad varint")
			}
			msg = msg[n:]
		case 1:
			f.v, msg = binary.LittleEndian.Uint64(msg), msg[8:]
		case 2:
			l, n := binary.Uvarint(msg)
			if n <= 0 || uint64(len(msg)-n) < l {
				t.Fatalf("bad length")
			}
			f.b, msg = msg[n:n+int(l)], msg[n+int(l):]
		case 5:
			f.v, msg = uint64(binary.LittleEndian.Uint32(msg)), msg[4:]
		default:
			t.Fatalf("unsupported wire type %d", f.wire)
		}
		out = append(out, f)
	}
	return out
}

// onnxTensor is a decoded TensorProto: float data (float32 tensors) or
// integer data (int32/int64 tensors), and the shape.
type onnxTensor struct {
	dims   []int
	floats []float32
	ints   []int64
}

func readTensor(t *testing.T, path string) onnxTensor {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tn onnxTensor
	var dtype uint64
	var raw []byte
	for _, f := range pbFields(t, data) {
		switch f.num {
		case 1: // dims
			if f.wire == 2 {
				for b := f.b; len(b) > 0; {
					v, n := binary.Uvarint(b)
					tn.dims, b = append(tn.dims, int(v)), b[n:]
				}
			} else {
				tn.dims = append(tn.dims, int(f.v))
			}
		case 2:
			dtype = f.v
		case 4: // float_data, packed
			for b := f.b; len(b) >= 4; b = b[4:] {
				tn.floats = append(tn.floats, math.Float32frombits(binary.LittleEndian.Uint32(b)))
			}
		case 7: // int64_data, packed
			for b := f.b; len(b) > 0; {
				v, n := binary.Uvarint(b)
				tn.ints, b = append(tn.ints, int64(v)), b[n:]
			}
		case 9:
			raw = f.b
		}
	}
	switch dtype {
	case 1:
		for ; len(raw) >= 4; raw = raw[4:] {
			tn.floats = append(tn.floats, math.Float32frombits(binary.LittleEndian.Uint32(raw)))
		}
	case 6:
		for ; len(raw) >= 4; raw = raw[4:] {
			tn.ints = append(tn.ints, int64(int32(binary.LittleEndian.Uint32(raw))))
		}
	case 7:
		for ; len(raw) >= 8; raw = raw[8:] {
			tn.ints = append(tn.ints, int64(binary.LittleEndian.Uint64(raw)))
		}
	default:
		t.Fatalf("%s: data type %d not handled", path, dtype)
	}
	return tn
}

// onnxNode is the single node of a conformance model: its op type and
// attributes (ints, floats and strings).
type onnxNode struct {
	op     string
	inputs int
	ints   map[string]int64
	floats map[string]float32
	strs   map[string]string
}

func readNode(t *testing.T, path string) onnxNode {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	node := onnxNode{ints: map[string]int64{}, floats: map[string]float32{}, strs: map[string]string{}}
	for _, m := range pbFields(t, data) {
		if m.num != 7 { // ModelProto.graph
			continue
		}
		for _, g := range pbFields(t, m.b) {
			if g.num != 1 { // GraphProto.node
				continue
			}
			for _, n := range pbFields(t, g.b) {
				switch n.num {
				case 1:
					node.inputs++
				case 4:
					node.op = string(n.b)
				case 5: // AttributeProto
					var name string
					var i int64
					var f float32
					var s string
					var kind uint64
					for _, a := range pbFields(t, n.b) {
						switch a.num {
						case 1:
							name = string(a.b)
						case 2:
							f = math.Float32frombits(uint32(a.v))
						case 3:
							i = int64(a.v)
						case 4:
							s = string(a.b)
						case 20:
							kind = a.v
						}
					}
					switch kind {
					case 1:
						node.floats[name] = f
					case 2:
						node.ints[name] = i
					case 3:
						node.strs[name] = s
					}
				}
			}
			return node
		}
	}
	t.Fatalf("%s: no node", path)
	return node
}

// axisRows views a tensor of dims as rows along axis: the result holds
// every line along that axis as a contiguous row (outer·inner rows of
// dims[axis] columns), and scatter puts rows back.
func axisRows(dims []int, axis int) (rows, cols int, gather func([]float32) []float32, scatter func(dst, rowsData []float32)) {
	outer, inner := 1, 1
	for _, d := range dims[:axis] {
		outer *= d
	}
	for _, d := range dims[axis+1:] {
		inner *= d
	}
	cols = dims[axis]
	rows = outer * inner
	index := func(r, j int) int { return (r/inner)*cols*inner + j*inner + r%inner }
	gather = func(src []float32) []float32 {
		out := make([]float32, rows*cols)
		for r := range rows {
			for j := range cols {
				out[r*cols+j] = src[index(r, j)]
			}
		}
		return out
	}
	scatter = func(dst, rowsData []float32) {
		for r := range rows {
			for j := range cols {
				dst[index(r, j)] = rowsData[r*cols+j]
			}
		}
	}
	return rows, cols, gather, scatter
}

func normAxis(axis int64, rank int) int {
	if axis < 0 {
		axis += int64(rank)
	}
	return int(axis)
}

// compareONNX checks got against want with ONNX's default tolerances
// (rtol 1e-3, atol 1e-7), tightened to rtol 1e-5: these kernels are far
// closer than the runner needs.
func compareONNX(t *testing.T, what string, got []float32, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		w := float64(want[i])
		if !elemClose(got[i], w, 1e-5*math.Abs(w)+1e-7) {
			t.Fatalf("%s: value %d = %v, want %v", what, i, got[i], want[i])
		}
	}
}

func TestONNXConformance(t *testing.T) {
	root := sharedtest.Path(t, "onnx-backend", "node")
	dirs, err := filepath.Glob(filepath.Join(root, "test_*"))
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]int{}
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, dir := range dirs {
			name := filepath.Base(dir)
			if strings.Contains(name, "_expanded") {
				continue // the same data as the unexpanded test
			}
			node := readNode(t, filepath.Join(dir, "model.onnx"))
			set := filepath.Join(dir, "test_data_set_0")
			in := func(i int) onnxTensor { return readTensor(t, filepath.Join(set, fmt.Sprintf("input_%d.pb", i))) }
			out := func(i int) onnxTensor { return readTensor(t, filepath.Join(set, fmt.Sprintf("output_%d.pb", i))) }
			unary := map[string]func(dst, src []float32){
				"Exp": ExpF32, "Erf": ErfF32, "Tanh": TanhF32, "Sigmoid": SigmoidF32,
			}
			switch node.op {
			case "Exp", "Erf", "Tanh", "Sigmoid":
				x := in(0)
				got := make([]float32, len(x.floats))
				unary[node.op](got, x.floats)
				compareONNX(t, name, got, out(0).floats)
			case "Gelu":
				x := in(0)
				got := make([]float32, len(x.floats))
				if node.strs["approximate"] == "tanh" {
					GeluTanhF32(got, x.floats)
				} else {
					GeluF32(got, x.floats)
				}
				compareONNX(t, name, got, out(0).floats)
			case "Softmax", "LogSoftmax":
				x := in(0)
				axis, ok := node.ints["axis"]
				if !ok {
					axis = -1
				}
				rows, cols, gather, scatter := axisRows(x.dims, normAxis(axis, len(x.dims)))
				r := gather(x.floats)
				if node.op == "Softmax" {
					Softmax(2, rows, cols, r, cols, r, cols)
				} else {
					LogSoftmax(2, rows, cols, r, cols, r, cols)
				}
				got := make([]float32, len(x.floats))
				scatter(got, r)
				compareONNX(t, name, got, out(0).floats)
			case "LayerNormalization":
				x, scale := in(0), in(1)
				axis, ok := node.ints["axis"]
				if !ok {
					axis = -1
				}
				eps, ok := node.floats["epsilon"]
				if !ok {
					eps = 1e-5
				}
				a := normAxis(axis, len(x.dims))
				cols := 1
				for _, d := range x.dims[a:] {
					cols *= d
				}
				rows := len(x.floats) / cols
				bias := make([]float32, cols)
				if node.inputs > 2 {
					bias = in(2).floats
				}
				got := make([]float32, len(x.floats))
				mean, rstd := make([]float32, rows), make([]float32, rows)
				LayerNorm(2, rows, cols, got, cols, x.floats, cols, scale.floats, bias, eps, mean, rstd)
				compareONNX(t, name+" Y", got, out(0).floats)
				if _, err := os.Stat(filepath.Join(set, "output_2.pb")); err == nil {
					compareONNX(t, name+" Mean", mean, out(1).floats)
					compareONNX(t, name+" InvStdDev", rstd, out(2).floats)
				}
			case "SoftmaxCrossEntropyLoss":
				if node.inputs > 2 {
					if isa == HardwareISA() {
						t.Logf("%s: skipped, class weights are not part of SoftmaxCrossEntropy", name)
					}
					continue
				}
				checkONNXCrossEntropy(t, name, node, in(0), in(1), out(0), set)
			default:
				continue
			}
			ran[node.op]++
		}
	})
	t.Logf("conformance tests run per op (all ISAs): %v", ran)
	for _, op := range []string{"Exp", "Erf", "Tanh", "Sigmoid", "Gelu", "Softmax", "LogSoftmax", "LayerNormalization", "SoftmaxCrossEntropyLoss"} {
		if ran[op] == 0 {
			t.Errorf("no conformance test ran for %s", op)
		}
	}
}

// checkONNXCrossEntropy runs one SoftmaxCrossEntropyLoss test: scores
// [N, C, d...] (classes on axis 1), labels [N, d...], reduction mean, sum
// or none, optional ignore_index, and the optional log-probability output.
func checkONNXCrossEntropy(t *testing.T, name string, node onnxNode, scores, labels, loss onnxTensor, set string) {
	rows, cols, gather, scatter := axisRows(scores.dims, 1)
	logits := gather(scores.floats)
	ignore := int32(math.MinInt32)
	if ii, ok := node.ints["ignore_index"]; ok {
		ignore = int32(ii)
	}
	// Rows of the gathered matrix run over (n, d...) in the labels' order.
	targets := make([]int32, rows)
	for r := range targets {
		targets[r] = int32(labels.ints[r])
	}
	reduction := node.strs["reduction"]
	if reduction == "" {
		reduction = "mean"
	}
	switch reduction {
	case "none":
		got := make([]float32, rows)
		for r := range rows {
			l, _ := SoftmaxCrossEntropy(1, 1, cols, logits[r*cols:], cols, targets[r:r+1], ignore, nil, 0, 1)
			got[r] = float32(l)
		}
		compareONNX(t, name, got, loss.floats)
	default:
		sum, n := SoftmaxCrossEntropy(2, rows, cols, logits, cols, targets, ignore, nil, 0, 1)
		if reduction == "mean" {
			sum /= float64(n)
		}
		compareONNX(t, name, []float32{float32(sum)}, loss.floats)
	}
	if _, err := os.Stat(filepath.Join(set, "output_1.pb")); err == nil {
		lp := make([]float32, len(logits))
		LogSoftmax(1, rows, cols, lp, cols, logits, cols)
		got := make([]float32, len(scores.floats))
		scatter(got, lp)
		compareONNX(t, name+" log_prob", got, readTensor(t, filepath.Join(set, "output_1.pb")).floats)
	}
}
