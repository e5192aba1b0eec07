package train

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/accel"
)

// countingEngine is a HostEngine that counts its steps and reports
// through a method of its own.
type countingEngine struct {
	*HostEngine
	steps  *int
	method Method
}

func (e countingEngine) TrainStep(b *Batch, lrScale float64) (StepStats, error) {
	*e.steps++
	return e.HostEngine.TrainStep(b, lrScale)
}

func (e countingEngine) Method() Method { return e.method }

// renamedMethod is full fine-tuning under another name.
type renamedMethod struct{ FullMethod }

func (renamedMethod) Name() string { return "other" }

// TestRegisterEngine: a registered engine trains the run of its backend
// with the options RunOptions gives it, and an engine that runs another
// method than the run's is refused.
func TestRegisterEngine(t *testing.T) {
	var steps int
	var gotOptions map[string]string
	wrong := false
	RegisterEngine("test-counting", func(env EngineEnv) (Engine, error) {
		gotOptions = env.Options
		b, err := accel.Open("cpu")
		if err != nil {
			return nil, err
		}
		e, err := NewHostEngine(env.Source, b, HostOptions{Threads: 1, Optimizer: env.Optimizer, Method: env.Method})
		if err != nil {
			return nil, err
		}
		m := env.Method
		if wrong {
			m = renamedMethod{}
		}
		return countingEngine{HostEngine: e, steps: &steps, method: m}, nil
	})
	if !strings.Contains(strings.Join(RegisteredEngines(), ","), "test-counting") {
		t.Fatalf("registered engines: %v", RegisteredEngines())
	}
	cfg := runConfig(t, OptimizerAdamW, 6)
	cfg.Backend = "test-counting"
	opts := RunOptions{Dir: filepath.Join(t.TempDir(), "run"), Source: newBigramSource(runVocab, 1), BackendOptions: map[string]string{"plugin": "x"}}
	if _, err := Run(context.Background(), cfg, opts); err != nil {
		t.Fatal(err)
	}
	if steps != 6 || gotOptions["plugin"] != "x" {
		t.Errorf("%d steps through the engine, options %v", steps, gotOptions)
	}
	wrong = true
	opts.Dir = filepath.Join(t.TempDir(), "run2")
	if _, err := Run(context.Background(), cfg, opts); err == nil || !strings.Contains(err.Error(), "runs another method") {
		t.Errorf("an engine with another method: %v", err)
	}
}
