package conformance

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// The default tolerances of ONNX's own backend test runner for floats
// (onnx.backend.test.runner: rtol 1e-3, atol 1e-7); integers, bools and
// strings must match exactly. tolerances.tsv lists the tests that need
// others, with the reason.
const (
	defaultRtol = 1e-3
	defaultAtol = 1e-7
)

// suites are the folders of the ONNX backend test suite.
var suites = []string{"node", "simple", "pytorch-converted", "pytorch-operator"}

// minPassShare is the share of the suite that must pass.
const minPassShare = 0.97

// readTable reads a TSV file of NAME<TAB>FIELD... lines (# comments and
// blank lines skipped) with at least fields columns after the name.
func readTable(t *testing.T, file string, fields int) map[string][]string {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		cols := strings.Split(text, "\t")
		if len(cols) < fields+1 || cols[len(cols)-1] == "" {
			t.Fatalf("%s:%d: want NAME and %d tab-separated fields, got %q", file, line, fields, text)
		}
		if _, dup := out[cols[0]]; dup {
			t.Fatalf("%s:%d: %s listed twice", file, line, cols[0])
		}
		out[cols[0]] = cols[1:]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

type tolerance struct{ rtol, atol float64 }

func readTolerances(t *testing.T) map[string]tolerance {
	out := map[string]tolerance{}
	for name, cols := range readTable(t, "tolerances.tsv", 3) {
		r, err1 := strconv.ParseFloat(cols[0], 64)
		a, err2 := strconv.ParseFloat(cols[1], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("tolerances.tsv: %s: bad rtol/atol %q %q", name, cols[0], cols[1])
		}
		out[name] = tolerance{r, a}
	}
	return out
}

// TestONNXBackend runs every test of the ONNX backend test suite (all four
// folders, every test_data_set_N) on the CPU backend, one subtest per
// test (-run 'TestONNXBackend/node/test_mod_' runs a few). Every failure
// must be listed in expected_failures.tsv and every listed test must fail;
// the pass count is logged and must reach minPassShare of the suite.
//
// DSTUNE_CONFORMANCE_REPORT=1 only reports: a test fails when it fails,
// whatever the lists say (for working on an op).
func TestONNXBackend(t *testing.T) {
	root := sharedtest.Path(t, "onnx-backend")
	expected := map[string]string{}
	for name, cols := range readTable(t, "expected_failures.tsv", 1) {
		expected[name] = cols[0]
	}
	tolerances := readTolerances(t)
	reportOnly := os.Getenv("DSTUNE_CONFORMANCE_REPORT") == "1"
	known := map[string]bool{}
	total, pass := 0, 0
	for _, suite := range suites {
		dirs, err := filepath.Glob(filepath.Join(root, suite, "test_*"))
		if err != nil || len(dirs) == 0 {
			t.Fatalf("no tests under %s (%v)", filepath.Join(root, suite), err)
		}
		sort.Strings(dirs)
		for _, dir := range dirs {
			name := filepath.Base(dir)
			known[name] = true
			tol := tolerance{defaultRtol, defaultAtol}
			if o, ok := tolerances[name]; ok {
				tol = o
			}
			t.Run(suite+"/"+name, func(t *testing.T) {
				total++
				err := runTest(dir, tol)
				reason, listed := expected[name]
				switch {
				case reportOnly:
					if err != nil {
						t.Error(err)
					}
				case err == nil && listed:
					t.Errorf("passes but expected_failures.tsv lists it (%s): remove the line", reason)
				case err != nil && !listed:
					t.Error(err)
				case err != nil:
					t.Logf("expected failure (%s): %v", reason, err)
				}
				if err == nil {
					pass++
				}
			})
		}
	}
	if reportOnly || total == 0 {
		t.Logf("ONNX backend tests: %d of %d run pass on the CPU backend", pass, total)
		return
	}
	for name := range expected {
		if !known[name] {
			t.Errorf("expected_failures.tsv lists %s, which is not in the suite", name)
		}
	}
	for name := range tolerances {
		if !known[name] {
			t.Errorf("tolerances.tsv lists %s, which is not in the suite", name)
		}
	}
	t.Logf("ONNX backend tests: %d of %d pass on the CPU backend (%.1f %%; %d expected failures)",
		pass, total, 100*float64(pass)/float64(total), len(expected))
	if total == len(known) && float64(pass) < minPassShare*float64(total) {
		t.Errorf("only %d of %d pass, want at least %.0f %%", pass, total, 100*minPassShare)
	}
}

// runTest runs one test directory: every test_data_set_N, inputs bound in
// graph-input order, outputs compared in graph-output order. Inputs and
// outputs of sequence and optional type are read from their
// SequenceProto/OptionalProto files and bound or compared element by
// element.
func runTest(dir string, tol tolerance) error {
	m, err := onnx.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		return err
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		return err
	}
	sets, err := filepath.Glob(filepath.Join(dir, "test_data_set_*"))
	if err != nil || len(sets) == 0 {
		return fmt.Errorf("no test data sets (%v)", err)
	}
	valueInputs := map[string]bool{}
	for _, name := range model.ValueInputs() {
		valueInputs[name] = true
	}
	random := randomNodes(m.Graph)
	for _, set := range sets {
		feeds := map[string]*ir.Tensor{}
		b := ir.Bindings{Shapes: map[string]ir.Shape{}, Values: map[string]*ir.Tensor{}, Composites: map[string]*ir.Datum{}}
		for i, in := range model.Inputs {
			d, err := readDatum(filepath.Join(set, fmt.Sprintf("input_%d.pb", i)), datumKindONNX(in.Kind))
			if err != nil {
				return err
			}
			// Inputs that decide shapes (a Reshape's target, Slice bounds,
			// ...) and strings are bound as constants; the rest are fed at
			// run time.
			switch {
			case in.Kind != ir.TensorDatum && valueInputs[in.Name]:
				b.Composites[in.Name] = d
			case in.Kind != ir.TensorDatum:
				b.Composites[in.Name] = d.Fed(in.Name, feeds)
			case d.Kind != ir.TensorDatum:
				return fmt.Errorf("input %q: the file holds a value of kind %s, the model declares a tensor", in.Name, d.Kind)
			case valueInputs[in.Name]:
				b.Values[in.Name] = d.Tensor
			default:
				b.Shapes[in.Name] = d.Tensor.Shape()
				feeds[in.Name] = d.Tensor
			}
		}
		g, err := model.Specialize(b)
		if err != nil {
			return err
		}
		exe, err := cpu.Compile(g, accel.Options{})
		if err != nil {
			return err
		}
		out, err := accel.RunNamed(exe, feeds)
		if err != nil {
			return err
		}
		results, err := g.Assemble(out)
		if err != nil {
			return err
		}
		got := map[string]*ir.Datum{}
		want := map[string]*ir.Datum{}
		for i, name := range model.Outputs {
			kind := onnx.TypeTensor
			if vi := m.Graph.Outputs[i]; vi.Type != nil && vi.Type.Kind != onnx.TypeUnknown {
				kind = vi.Type.Kind
			}
			w, err := readDatum(filepath.Join(set, fmt.Sprintf("output_%d.pb", i)), kind)
			if err != nil {
				return err
			}
			want[name] = w
			got[name] = results[i]
		}
		if dropout := trainingDropout(g); dropout != nil {
			if err := checkDropout(dropout, g, b, feeds, tensors(got), tensors(want), tol); err != nil {
				return fmt.Errorf("%s: %w", filepath.Base(set), err)
			}
			continue
		}
		if len(random) > 0 {
			known := map[string]*ir.Tensor{}
			for name, t := range feeds {
				known[name] = t
			}
			for name, t := range b.Values {
				known[name] = t
			}
			if err := checkRandom(m.Graph, random, known, got, want); err != nil {
				return fmt.Errorf("%s: %w", filepath.Base(set), err)
			}
			continue
		}
		for _, name := range model.Outputs {
			if d := ir.CompareData(got[name], want[name], tol.rtol, tol.atol); !d.OK() {
				return fmt.Errorf("%s: output %q: %v", filepath.Base(set), name, d)
			}
		}
	}
	return nil
}

// datumKindONNX is the ONNX type kind of a declared input.
func datumKindONNX(k ir.DatumKind) onnx.TypeKind {
	switch k {
	case ir.SequenceDatum:
		return onnx.TypeSequence
	case ir.OptionalDatum:
		return onnx.TypeOptional
	}
	return onnx.TypeTensor
}

// readDatum reads a test-data file holding a value of the given kind.
func readDatum(path string, kind onnx.TypeKind) (*ir.Datum, error) {
	v, err := onnx.ReadValueFile(path, kind)
	if err != nil {
		return nil, err
	}
	d, err := ir.DatumFromONNX(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// tensors returns the tensor outputs of data (for the checks that only
// know tensors).
func tensors(data map[string]*ir.Datum) map[string]*ir.Tensor {
	out := map[string]*ir.Tensor{}
	for name, d := range data {
		if d.Kind == ir.TensorDatum {
			out[name] = d.Tensor
		}
	}
	return out
}

func trainingDropout(g *ir.Graph) *ir.Node {
	for _, n := range g.Nodes {
		if _, ok := n.Op.(*ir.Dropout); ok {
			return n
		}
	}
	return nil
}

// checkDropout checks what a training-mode Dropout determines: its
// expected outputs come from someone else's random mask, so no runtime
// reproduces them. Both ours and the reference must keep each element
// either dropped (0) or scaled by 1/(1-ratio), the mask (when there is one)
// must say which, and the share dropped must be plausible for the ratio.
func checkDropout(n *ir.Node, g *ir.Graph, b ir.Bindings, inputs, got, want map[string]*ir.Tensor, tol tolerance) error {
	op := n.Op.(*ir.Dropout)
	x := inputs[n.Inputs[0].Name]
	if x == nil {
		x = b.Values[n.Inputs[0].Name]
	}
	if x == nil {
		return fmt.Errorf("dropout input %q is not a graph input", n.Inputs[0].Name)
	}
	var outNames []string
	for _, o := range g.Outputs {
		outNames = append(outNames, o.Name)
	}
	check := func(who string, res map[string]*ir.Tensor) error {
		y := res[outNames[0]]
		if y.DType() != x.DType() || !y.Shape().Equal(x.Shape()) {
			return fmt.Errorf("%s: output %v for input %v", who, y, x)
		}
		var mask []bool
		if len(outNames) > 1 {
			m := res[outNames[1]]
			if m.DType() != ir.Bool || !m.Shape().Equal(x.Shape()) {
				return fmt.Errorf("%s: mask %v for input %v", who, m, x)
			}
			mask = m.Bools()
		}
		scale := 1 / (1 - float64(op.Ratio))
		dropped := 0
		for i := range x.Len() {
			xv, yv := x.Float64At(i), y.Float64At(i)
			kept := math.Abs(yv-xv*scale) <= tol.atol+tol.rtol*math.Abs(xv*scale)
			if !kept && yv != 0 {
				return fmt.Errorf("%s: element %d is %g, want 0 or %g", who, i, yv, xv*scale)
			}
			if mask != nil && xv != 0 && mask[i] != kept {
				return fmt.Errorf("%s: element %d: mask %v, output %g for input %g", who, i, mask[i], yv, xv)
			}
			if !kept {
				dropped++
			}
		}
		nf := float64(x.Len())
		r := float64(op.Ratio)
		if bound := 4*math.Sqrt(r*(1-r)/nf) + 1/nf; math.Abs(float64(dropped)/nf-r) > bound {
			return fmt.Errorf("%s: dropped %d of %d, implausible for ratio %g", who, dropped, x.Len(), r)
		}
		return nil
	}
	if err := check("reference", want); err != nil {
		return err
	}
	return check("dstune", got)
}
