package peft

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// Prompt is --method prompt (Lester et al. 2021), a train.SourceMethod:
// n virtual tokens, a trainable [n, d] matrix, take n positions of every
// sequence at the output of the token embedding (InsertPrompt), and are
// the only parameters trained; the loss and the evaluation see the real
// positions only. The run trains the prompted model's PromptParam and
// keeps the soft prompt in PEFT's layout (AdapterFile, AdapterConfigFile).
type Prompt struct {
	opts     PromptOptions
	seed     uint64
	task     train.Task
	baseHash string
	model    *ir.Model
	forward  func() (*ir.Graph, error)
	budget   budget
	dim      int
}

// NewPrompt makes the method for a run of env.Config.
func NewPrompt(env train.MethodEnv) (*Prompt, error) {
	opts, err := ParsePromptOptions(env.Config.Prompt)
	if err != nil {
		return nil, err
	}
	if env.Config.Trainable != "" {
		return nil, fmt.Errorf("prompt: --trainable picks model parameters to train; prompt tuning trains only its virtual tokens")
	}
	if env.Model == nil {
		return nil, fmt.Errorf("prompt: prompt tuning edits the ONNX model, which this run does not have")
	}
	m := &Prompt{opts: opts, seed: env.Config.Seed, task: env.Config.Task, model: env.Model, forward: env.ForwardGraph}
	inits, err := dst.InitializersOf(env.Model.ONNX)
	if err != nil {
		return nil, fmt.Errorf("prompt: base model hash: %w", err)
	}
	if m.baseHash, err = dst.BaseHash(inits); err != nil {
		return nil, fmt.Errorf("prompt: base model hash: %w", err)
	}
	return m, nil
}

func (m *Prompt) Name() string { return train.MethodPrompt }

// Prepare adds nothing to the update.
func (m *Prompt) Prepare([]*ir.Param) (*update.Selection, *update.SelectionState, error) {
	return nil, nil, nil
}

// Metrics are the run's budget (budgetMetrics).
func (m *Prompt) Metrics(int64, *update.Result) any { return m.budget.metrics() }

// State: the soft prompt is the trainable parameter, which every
// checkpoint holds.
func (m *Prompt) State(*update.SelectionState, int64) train.MethodState { return train.MethodState{} }

func (m *Prompt) LoadState(train.MethodState) (*update.SelectionState, error) { return nil, nil }

// Source imports the model with the soft prompt inserted (its initial
// values drawn as --prompt-init says) and returns the source that trains
// the prompt alone, for the run's task.
func (m *Prompt) Source(src train.GraphSource) (train.GraphSource, error) {
	site, err := findPromptSite(m.model.ONNX)
	if err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	m.dim = int(site.table.Dims[1])
	values, err := m.initial(site.table)
	if err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	prompted, err := InsertPrompt(m.model.ONNX, &SoftPrompt{At: m.opts.At, Length: m.opts.Length, Dim: m.dim, Values: values})
	if err != nil {
		return nil, err
	}
	model, err := ir.NewModel(prompted)
	if err != nil {
		return nil, fmt.Errorf("prompt: the prompted model: %w", err)
	}
	model = model.Float32Compute()
	ms, err := train.NewModelSource(model, train.ModelSourceOptions{Task: m.task, Trainable: "^" + regexp.QuoteMeta(PromptParam) + "$"})
	if err != nil {
		return nil, fmt.Errorf("prompt: the model with a soft prompt of %d virtual tokens (--prompt-len): %w", m.opts.Length, err)
	}
	if in := src.Inputs(); in != ms.Inputs() {
		return nil, fmt.Errorf("prompt: the prompted model's inputs %+v differ from the model's %+v", ms.Inputs(), in)
	}
	m.budget = budget{Free: int64(m.opts.Length * m.dim)}
	if m.forward != nil {
		g, err := m.forward()
		if err != nil {
			return nil, fmt.Errorf("prompt: %w", err)
		}
		for _, p := range g.Params {
			if len(p.Uses) > 0 {
				m.budget.Base += int64(p.Tensor.Len())
			}
		}
	}
	return ms, nil
}

// Summary says what the run trains and its budget.
func (m *Prompt) Summary() string {
	init := "the embeddings of sampled vocabulary ids"
	if m.opts.Init == PromptInitRandom {
		init = "random values"
	}
	return fmt.Sprintf("prompt tuning: %d virtual tokens of width %d, %s, from %s: %s", m.opts.Length, m.dim, m.opts.At, init, m.budget)
}

// initial draws the prompt's first values: rows of the embedding table at
// n vocabulary ids sampled without replacement (with, when n exceeds the
// vocabulary), or normal values with the table's mean and standard
// deviation; seeded by the run's seed.
func (m *Prompt) initial(table *onnx.Tensor) ([]float32, error) {
	t, err := ir.TensorFromONNX(table)
	if err != nil {
		return nil, err
	}
	rows := ir.Convert(t, ir.Float64).Float64s()
	vocab, d, n := int(table.Dims[0]), int(table.Dims[1]), m.opts.Length
	rng := rand.New(rand.NewPCG(m.seed, nameSeed("prompt_init")))
	out := make([]float32, n*d)
	switch m.opts.Init {
	case PromptInitVocab:
		ids := rng.Perm(vocab)
		for len(ids) < n {
			ids = append(ids, rng.Perm(vocab)...)
		}
		for i, id := range ids[:n] {
			for j := range d {
				out[i*d+j] = float32(rows[id*d+j])
			}
		}
	case PromptInitRandom:
		var sum, sum2 float64
		for _, x := range rows {
			sum += x
			sum2 += x * x
		}
		mean := sum / float64(len(rows))
		std := math.Sqrt(max(sum2/float64(len(rows))-mean*mean, 0))
		for i := range out {
			out[i] = float32(mean + std*rng.NormFloat64())
		}
	}
	return out, nil
}

// Adapter is the soft prompt a checkpoint's state holds.
func (m *Prompt) Adapter(st *train.EngineState) (*Adapter, error) {
	v, ok := st.Params[PromptParam]
	if !ok {
		return nil, fmt.Errorf("prompt: the state holds no %s", PromptParam)
	}
	return &Adapter{Method: "prompt", BaseSHA256: m.baseHash, Steps: st.Step, FreeParams: m.budget.Free, BaseParams: m.budget.Base,
		Prompt: &SoftPrompt{At: m.opts.At, Length: m.opts.Length, Dim: m.dim, Values: slices.Clone(v)}}, nil
}

// WriteRunFiles writes the soft prompt of the checkpoint's state into the
// run directory (AdapterFile and AdapterConfigFile, atomically).
func (m *Prompt) WriteRunFiles(dir string, st *train.EngineState) error {
	a, err := m.Adapter(st)
	if err != nil {
		return err
	}
	return WriteAdapter(dir, a, string(m.task))
}
