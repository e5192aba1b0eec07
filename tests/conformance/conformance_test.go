package conformance

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// The tolerances of ONNX's own backend test runner for floats; integers
// and bools must match exactly.
const (
	rtol = 1e-3
	atol = 1e-5
)

// minPass is the number of tests that must pass (the bar).
const minPass = 560

func readExpectedFailures(t *testing.T) map[string]string {
	f, err := os.Open("expected_failures.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, reason, ok := strings.Cut(text, "\t")
		if !ok || reason == "" {
			t.Fatalf("expected_failures.tsv:%d: want NAME<TAB>REASON, got %q", line, text)
		}
		if _, dup := out[name]; dup {
			t.Fatalf("expected_failures.tsv:%d: %s listed twice", line, name)
		}
		out[name] = reason
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestONNXNodeTests runs every test of the ONNX node suite on the CPU
// backend. Every failure must be listed in expected_failures.tsv and every
// listed test must fail; the pass count is logged.
func TestONNXNodeTests(t *testing.T) {
	root := sharedtest.Path(t, "onnx-node")
	expected := readExpectedFailures(t)
	dirs, err := filepath.Glob(filepath.Join(root, "test_*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no tests under %s (%v)", root, err)
	}
	sort.Strings(dirs)
	known := map[string]bool{}
	pass := 0
	for _, dir := range dirs {
		name := filepath.Base(dir)
		known[name] = true
		err := runNodeTest(dir)
		reason, listed := expected[name]
		switch {
		case err == nil && listed:
			t.Errorf("%s passes but expected_failures.tsv lists it (%s): remove the line", name, reason)
		case err == nil:
			pass++
		case !listed:
			t.Errorf("%s: %v", name, err)
		default:
			t.Logf("%s: expected failure (%s): %v", name, reason, err)
		}
	}
	for name := range expected {
		if !known[name] {
			t.Errorf("expected_failures.tsv lists %s, which is not in the suite", name)
		}
	}
	t.Logf("ONNX node tests: %d of %d pass on the CPU backend (%d expected failures)", pass, len(dirs), len(expected))
	if pass < minPass {
		t.Errorf("only %d of %d pass, want at least %d", pass, len(dirs), minPass)
	}
}

// runNodeTest runs one test directory: every test_data_set_N, inputs bound
// in graph-input order, outputs compared in graph-output order.
func runNodeTest(dir string) error {
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
	for _, set := range sets {
		inputs := map[string]*ir.Tensor{}
		b := ir.Bindings{Shapes: map[string]ir.Shape{}, Values: map[string]*ir.Tensor{}}
		for i, in := range model.Inputs {
			t, err := readTensor(filepath.Join(set, fmt.Sprintf("input_%d.pb", i)))
			if err != nil {
				return err
			}
			// Inputs that decide shapes (a Reshape's target, Slice bounds,
			// ...) are bound as constants; the rest are fed at run time.
			if valueInputs[in.Name] {
				b.Values[in.Name] = t
			} else {
				b.Shapes[in.Name] = t.Shape()
				inputs[in.Name] = t
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
		got, err := accel.RunNamed(exe, inputs)
		if err != nil {
			return err
		}
		want := map[string]*ir.Tensor{}
		for i, name := range model.Outputs {
			w, err := readTensor(filepath.Join(set, fmt.Sprintf("output_%d.pb", i)))
			if err != nil {
				return err
			}
			want[name] = w
		}
		if dropout := trainingDropout(g); dropout != nil {
			if err := checkDropout(dropout, g, b, inputs, got, want); err != nil {
				return fmt.Errorf("%s: %w", filepath.Base(set), err)
			}
			continue
		}
		for _, name := range model.Outputs {
			if d := ir.Compare(got[name], want[name], rtol, atol); !d.OK() {
				return fmt.Errorf("%s: output %q: %v", filepath.Base(set), name, d)
			}
		}
	}
	return nil
}

func readTensor(path string) (*ir.Tensor, error) {
	ot, err := onnx.ReadTensorFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ir.TensorFromONNX(ot)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
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
func checkDropout(n *ir.Node, g *ir.Graph, b ir.Bindings, inputs, got, want map[string]*ir.Tensor) error {
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
			kept := math.Abs(yv-xv*scale) <= atol+rtol*math.Abs(xv*scale)
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
