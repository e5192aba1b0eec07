package tpu

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
)

// TestONNXNodeSuiteLowered lowers every ONNX node test the IR imports and
// evaluates the StableHLO with the reference evaluator, comparing with
// ir.Interpret on the same graph (the IR's semantics are the contract;
// the CPU backend's conformance run checks those against ONNX). Ops or
// dtypes the lowering reports as not supported are counted, not failed;
// every lowered graph must evaluate and match.
func TestONNXNodeSuiteLowered(t *testing.T) {
	root := sharedtest.Path(t, "onnx-backend", "node")
	dirs, err := filepath.Glob(filepath.Join(root, "test_*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no tests under %s (%v)", root, err)
	}
	sort.Strings(dirs)
	var lowered, unsupported, skipped int
	reasons := map[string]int{}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		err := lowerNodeTest(dir)
		switch {
		case err == nil:
			lowered++
		case errors.Is(err, errSkipCase):
			skipped++
		case errors.Is(err, ir.ErrNotSupported):
			unsupported++
			msg := err.Error()
			if i := strings.LastIndex(msg, "not supported: "); i >= 0 {
				msg = msg[i+len("not supported: "):]
			}
			reasons[msg]++
		default:
			t.Errorf("%s: %v", name, err)
		}
	}
	var rs []string
	for r, n := range reasons {
		rs = append(rs, fmt.Sprintf("%d× %s", n, r))
	}
	sort.Strings(rs)
	t.Logf("ONNX node tests: %d lowered and matching, %d not supported by the lowering, %d not importable or not comparable; unsupported:\n%s", lowered, unsupported, skipped, strings.Join(rs, "\n"))
	if lowered < 450 {
		t.Errorf("only %d node tests lowered, want at least 450", lowered)
	}
}

var errSkipCase = errors.New("not a lowering case")

func lowerNodeTest(dir string) error {
	_, err := lowerNodeDir(dir)
	return err
}

// lowerNodeDir lowers one node test, evaluates it and compares with
// ir.Interpret; it returns the program.
func lowerNodeDir(dir string) (*Program, error) {
	p, err := lowerNodeProgram(dir)
	return p, err
}

func lowerNodeProgram(dir string) (prog *Program, err error) {
	m, err := onnx.ReadFile(filepath.Join(dir, "model.onnx"))
	if err != nil {
		return nil, errSkipCase
	}
	defer m.Close()
	model, err := ir.NewModel(m)
	if err != nil {
		return nil, errSkipCase
	}
	set := filepath.Join(dir, "test_data_set_0")
	valueInputs := map[string]bool{}
	for _, name := range model.ValueInputs() {
		valueInputs[name] = true
	}
	b := ir.Bindings{Shapes: map[string]ir.Shape{}, Values: map[string]*ir.Tensor{}}
	inputs := map[string]*ir.Tensor{}
	for i, in := range model.Inputs {
		ot, err := onnx.ReadTensorFile(filepath.Join(set, fmt.Sprintf("input_%d.pb", i)))
		if err != nil {
			return nil, errSkipCase
		}
		x, err := ir.TensorFromONNX(ot)
		if err != nil {
			return nil, errSkipCase
		}
		if valueInputs[in.Name] {
			b.Values[in.Name] = x
		} else {
			b.Shapes[in.Name] = x.Shape()
			inputs[in.Name] = x
		}
	}
	g, err := model.Specialize(b)
	if err != nil {
		return nil, errSkipCase
	}
	want, err := ir.Interpret(g, inputs)
	if err != nil {
		return nil, errSkipCase
	}
	p, err := LowerGraph(g)
	if err != nil {
		return nil, err
	}
	var args []*ir.Tensor
	for _, a := range p.Args {
		if a.Kind == ArgInput {
			args = append(args, inputs[a.Name])
		} else {
			args = append(args, g.Param(a.Name).Tensor)
		}
	}
	got, err := runProgram(p, args)
	if err != nil {
		return nil, fmt.Errorf("evaluating: %v", err)
	}
	for i, r := range p.Results {
		w := want[r.Name]
		if d := ir.Compare(got[i], w, 1e-4, 1e-5); !d.OK() {
			return nil, fmt.Errorf("output %q: %v", r.Name, d)
		}
	}
	return p, nil
}
