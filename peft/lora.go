package peft

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/train"
	"github.com/dstune/dstune/update"
)

// LoRA is --method lora (Hu et al. 2021, as PEFT implements it), a
// train.SourceMethod: every target linear layer y = x·M of weight W gets
// y + (α/r)·B·(A·dropout(x)) with A [r, in] and B [out, r] the only
// trainable parameters, A drawn as PEFT draws it (Kaiming-uniform with
// a = √5: U(−1/√in, 1/√in)) and B zero, so training starts from the
// model itself. The model's weights stay frozen.
//
// The adapters are edits of the specialized forward graph (editLoRA), so
// every backend lowers them like any graph; dropout is a mask the engine
// feeds each training step (train.StepInputs), drawn from the run's seed,
// the step and the site. The run keeps the adapter in PEFT's layout
// (AdapterFile, AdapterConfigFile), rewritten with every checkpoint.
type LoRA struct {
	opts      LoRAOptions
	trainable *regexp.Regexp // the run's --trainable, when given
	seed      uint64
	task      string
	baseHash  string
	forward   func() (*ir.Graph, error)

	targets []*loraTarget
	params  []*ir.Param
	budget  budget
}

// loraTarget is one adapted weight and its adapter.
type loraTarget struct {
	Weight      string // the initializer
	Kind        string // its module kind
	In, Out     int
	FanInFanOut bool
	A, B        *ir.Param
}

// budget is a run's free parameters: what the method trains, against the
// base model's trainable parameters.
type budget struct {
	Free int64 `json:"free_params"`
	Base int64 `json:"-"`
}

// budgetMetrics are the fields LoRA and prompt tuning add to every
// metrics.jsonl record: free_params, the parameters the method trains,
// and eps, their share of the base model's trainable parameters — the
// fraction of free parameters DST's eps also reports, so that runs of
// every method line up on one axis.
type budgetMetrics struct {
	Free int64   `json:"free_params"`
	Eps  float64 `json:"eps"`
}

func (b budget) metrics() *budgetMetrics {
	m := &budgetMetrics{Free: b.Free}
	if b.Base > 0 {
		m.Eps = float64(b.Free) / float64(b.Base)
	}
	return m
}

// NewLoRA makes the method for a run of env.Config; nothing is decided
// about the model until Source.
func NewLoRA(env train.MethodEnv) (*LoRA, error) {
	opts, err := ParseLoRAOptions(env.Config.LoRA)
	if err != nil {
		return nil, err
	}
	m := &LoRA{opts: opts, seed: env.Config.Seed, task: string(env.Config.Task), forward: env.ForwardGraph}
	if env.Config.Trainable != "" {
		if m.trainable, err = regexp.Compile(env.Config.Trainable); err != nil {
			return nil, fmt.Errorf("--trainable: %w", err)
		}
	}
	if env.Model != nil {
		inits, err := dst.InitializersOf(env.Model.ONNX)
		if err != nil {
			return nil, fmt.Errorf("lora: base model hash: %w", err)
		}
		if m.baseHash, err = dst.BaseHash(inits); err != nil {
			return nil, fmt.Errorf("lora: base model hash: %w", err)
		}
	}
	return m, nil
}

func (m *LoRA) Name() string { return train.MethodLoRA }

// Prepare adds nothing to the update: the optimizer steps the adapters.
func (m *LoRA) Prepare([]*ir.Param) (*update.Selection, *update.SelectionState, error) {
	return nil, nil, nil
}

// Metrics are the run's budget (budgetMetrics).
func (m *LoRA) Metrics(int64, *update.Result) any { return m.budget.metrics() }

// State: the adapters are the trainable parameters, which every
// checkpoint holds; LoRA has no state of its own.
func (m *LoRA) State(*update.SelectionState, int64) train.MethodState { return train.MethodState{} }

func (m *LoRA) LoadState(train.MethodState) (*update.SelectionState, error) { return nil, nil }

// Summary says what the run trains: the adapters' shape, the targets by
// kind and the budget.
func (m *LoRA) Summary() string {
	count := map[string]int{}
	var kinds []string
	for _, t := range m.targets {
		if count[t.Kind] == 0 {
			kinds = append(kinds, t.Kind)
		}
		count[t.Kind]++
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s ×%d", k, count[k])
	}
	text := fmt.Sprintf("LoRA: r %d, α %g (scale %g), dropout %g on %d weights (%s): %s",
		m.opts.Rank, m.opts.Alpha, m.opts.Scale(), m.opts.Dropout, len(m.targets), strings.Join(parts, ", "), m.budget)
	return text + m.rankNote()
}

// rankNote says when r reaches the smaller side of adapted weights: an
// update of rank r cannot exceed it, so there the adapter trains more
// parameters than the weight's own and expresses nothing more.
func (m *LoRA) rankNote() string {
	var over []*loraTarget
	for _, t := range m.targets {
		if m.opts.Rank >= min(t.In, t.Out) {
			over = append(over, t)
		}
	}
	if len(over) == 0 {
		return ""
	}
	t := over[0]
	return fmt.Sprintf("\nnote: r %d reaches the smaller side of %d of the %d weights (%s is %d×%d): an update of rank %d cannot exceed it, so there the adapter trains %d parameters where the weight has %d",
		m.opts.Rank, len(over), len(m.targets), t.Weight, t.In, t.Out, min(t.In, t.Out), m.opts.Rank*(t.In+t.Out), t.In*t.Out)
}

// String is the budget in words: "2,048 free parameters (0.78 % of 262,144)".
func (b budget) String() string {
	if b.Base == 0 {
		return fmt.Sprintf("%s free parameters", thousands(b.Free))
	}
	return fmt.Sprintf("%s free parameters (%.3g %% of %s)", thousands(b.Free), 100*float64(b.Free)/float64(b.Base), thousands(b.Base))
}

// thousands writes n with thousands separators.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// Targets lists the adapted initializers, in the model's parameter order.
func (m *LoRA) Targets() []string {
	names := make([]string, len(m.targets))
	for i, t := range m.targets {
		names[i] = t.Weight
	}
	return names
}

// Source picks the target weights among src's trainable parameters —
// linear-layer weights of the target kinds (LoRAOptions.Targets; with
// --trainable, the weights it names), with their module kinds derived
// from the graph as dstune inspect shows them — makes their adapters and
// returns the source that trains those.
func (m *LoRA) Source(src train.GraphSource) (train.GraphSource, error) {
	fs, ok := src.(train.ForwardSource)
	if !ok {
		return nil, fmt.Errorf("lora: the run's graph source cannot give its forward graph, which LoRA edits")
	}
	forward := m.forward
	if forward == nil {
		forward = func() (*ir.Graph, error) { return fs.Forward(train.BatchShape{B: 1, T: 2}) }
	}
	g, err := forward()
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	if err := m.pickTargets(g, fs.Params()); err != nil {
		return nil, err
	}
	return &loraSource{base: fs, m: m}, nil
}

// pickTargets finds the targets in g and makes their adapters.
func (m *LoRA) pickTargets(g *ir.Graph, candidates []*ir.Param) error {
	kinds := m.opts.Targets
	if len(kinds) == 0 {
		kinds = DefaultTargets
		if m.trainable != nil {
			kinds = linearKinds
		}
	}
	isCandidate := map[string]bool{}
	for _, p := range candidates {
		isCandidate[p.Name] = true
	}
	modules := dst.Modules(g)
	uses := consumers(g)
	var skipped []string
	for _, p := range g.Params {
		if len(p.Uses) == 0 {
			continue
		}
		m.budget.Base += int64(p.Tensor.Len())
		if !isCandidate[p.Name] {
			continue
		}
		kind, isWeight := strings.CutSuffix(modules[p.Name].Kind, ".weight")
		if !isWeight || !slices.Contains(kinds, kind) {
			skipped = append(skipped, fmt.Sprintf("%s (%s)", p.Name, modules[p.Name].Kind))
			continue
		}
		layer, err := findLayer(p, uses)
		if err != nil {
			return fmt.Errorf("lora: cannot adapt %s (%s): %w", p.Name, kind, err)
		}
		m.addTarget(p.Name, kind, layer)
	}
	if len(m.targets) == 0 {
		what := fmt.Sprintf("no parameter of the kinds %s", strings.Join(kinds, ", "))
		if m.trainable != nil {
			what = fmt.Sprintf("--trainable %q matches no linear layer weight of the kinds %s", m.trainable, strings.Join(kinds, ", "))
		}
		if len(skipped) > 0 {
			return fmt.Errorf("lora: %s (the candidates: %s)", what, strings.Join(skipped, ", "))
		}
		return fmt.Errorf("lora: %s", what)
	}
	return nil
}

// addTarget makes the adapter of one weight: A [r, in] from
// U(−1/√in, 1/√in) (kaiming_uniform_ with a = √5, fan_in = in), seeded by
// the run's seed and the weight's name; B [out, r] zero.
func (m *LoRA) addTarget(weight, kind string, l *loraLayer) {
	r := m.opts.Rank
	path := ModulePath(weight)
	a := make([]float32, r*l.In)
	rng := rand.New(rand.NewPCG(m.seed, nameSeed("lora_A:"+weight)))
	bound := 1 / math.Sqrt(float64(l.In))
	for i := range a {
		a[i] = float32((2*rng.Float64() - 1) * bound)
	}
	t := &loraTarget{Weight: weight, Kind: kind, In: l.In, Out: l.Out, FanInFanOut: l.FanInFanOut,
		A: &ir.Param{Name: keyPrefix + path + loraASuffix, Tensor: ir.FromFloat32s(ir.Shape{r, l.In}, a)},
		B: &ir.Param{Name: keyPrefix + path + loraBSuffix, Tensor: ir.NewTensor(ir.Float32, ir.Shape{l.Out, r})}}
	m.targets = append(m.targets, t)
	m.params = append(m.params, t.A, t.B)
	m.budget.Free += int64(r * (l.In + l.Out))
}

// nameSeed hashes a name into a generator's second seed word (FNV-1a).
func nameSeed(name string) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(name) {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return h
}

// mix derives the seed of one draw from a run's seed and two counters
// (splitmix64's finalizer over their combination).
func mix(seed uint64, a, b int64) uint64 {
	z := seed ^ uint64(a)*0x9e3779b97f4a7c15 ^ uint64(b)*0xbf58476d1ce4e5b9
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Adapter is the adapter a checkpoint's state holds.
func (m *LoRA) Adapter(st *train.EngineState) (*Adapter, error) {
	w := &LoRAWeights{Rank: m.opts.Rank, Alpha: m.opts.Alpha, Dropout: m.opts.Dropout}
	for _, t := range m.targets {
		a, aok := st.Params[t.A.Name]
		b, bok := st.Params[t.B.Name]
		if !aok || !bok {
			return nil, fmt.Errorf("lora: the state holds no adapter for %s", t.Weight)
		}
		w.Modules = append(w.Modules, LoRAModule{Path: ModulePath(t.Weight), Weight: t.Weight, FanInFanOut: t.FanInFanOut,
			In: t.In, Out: t.Out, A: slices.Clone(a), B: slices.Clone(b)})
	}
	return &Adapter{Method: "lora", BaseSHA256: m.baseHash, Steps: st.Step, FreeParams: m.budget.Free, BaseParams: m.budget.Base, LoRA: w}, nil
}

// WriteRunFiles writes the adapter of the checkpoint's state into the run
// directory (AdapterFile and AdapterConfigFile, atomically).
func (m *LoRA) WriteRunFiles(dir string, st *train.EngineState) error {
	a, err := m.Adapter(st)
	if err != nil {
		return err
	}
	return WriteAdapter(dir, a, m.task)
}

// loraSource is the model with the adapters: the base source's graphs,
// edited before they are differentiated.
type loraSource struct {
	base train.ForwardSource
	m    *LoRA
}

var (
	_ train.ForwardSource = (*loraSource)(nil)
	_ train.StepInputs    = (*loraSource)(nil)
)

func (s *loraSource) Params() []*ir.Param      { return s.m.params }
func (s *loraSource) Inputs() train.InputNames { return s.base.Inputs() }

// edited is the base model's forward graph for shape with the adapters.
func (s *loraSource) edited(shape train.BatchShape, training bool) (*ir.Graph, error) {
	g, err := s.base.Forward(shape)
	if err != nil {
		return nil, err
	}
	uses := consumers(g)
	layers := map[string]*loraLayer{}
	for _, t := range s.m.targets {
		p := g.Param(t.Weight)
		if p == nil {
			return nil, fmt.Errorf("lora: %s is missing from the graph for batch %d×%d", t.Weight, shape.B, shape.T)
		}
		l, err := findLayer(p, uses)
		if err != nil {
			return nil, fmt.Errorf("lora: batch %d×%d: %w", shape.B, shape.T, err)
		}
		layers[t.Weight] = l
	}
	eg, err := editLoRA(g, s.m.targets, layers, s.m.opts.Scale(), s.m.opts.Dropout, training)
	if err != nil {
		return nil, fmt.Errorf("lora: batch %d×%d: %w", shape.B, shape.T, err)
	}
	return eg, nil
}

// Forward is the model with the adapters (without dropout) for shape.
func (s *loraSource) Forward(shape train.BatchShape) (*ir.Graph, error) {
	return s.edited(shape, false)
}

// Loss is the base source's loss.
func (s *loraSource) Loss() ir.LossSpec { return s.base.Loss() }

// TrainingGraph is the edited graph's loss differentiated with respect to
// the adapters.
func (s *loraSource) TrainingGraph(shape train.BatchShape) (*ir.Graph, error) {
	g, err := s.edited(shape, true)
	if err != nil {
		return nil, err
	}
	wrt := make([]*ir.Param, len(s.m.params))
	for i, p := range s.m.params {
		wrt[i] = g.Param(p.Name)
	}
	tg, err := ir.TrainingGraph(g, s.base.Loss(), wrt)
	if err != nil {
		return nil, fmt.Errorf("training graph for batch %d×%d: %w", shape.B, shape.T, err)
	}
	return tg, nil
}

// LossGraph is the edited graph (no dropout) with the loss.
func (s *loraSource) LossGraph(shape train.BatchShape) (*ir.Graph, error) {
	g, err := s.edited(shape, false)
	if err != nil {
		return nil, err
	}
	lg, err := ir.LossGraph(g, s.base.Loss())
	if err != nil {
		return nil, fmt.Errorf("loss graph for batch %d×%d: %w", shape.B, shape.T, err)
	}
	return lg, nil
}

// HasStepInput: the training graph's dropout masks.
func (s *loraSource) HasStepInput(name string) bool {
	return strings.HasPrefix(name, dropoutPrefix) && s.m.opts.Dropout > 0
}

// FillStepInput draws a dropout mask for step: every entry kept with
// probability 1 − p and then holding 1/(1 − p), as torch's dropout
// scales, else 0. The draws come from a PCG generator seeded by the run's
// seed, the batch's draw number (the step, without accumulation) and the
// input's name; each 64-bit draw gives four
// 16-bit uniforms u, and an entry is kept when u ≥ round(p·65536) (p is
// rounded to a multiple of 2⁻¹⁶): a mask costs a quarter of a draw per
// entry, which keeps it small beside the step it feeds.
func (s *loraSource) FillStepInput(name string, draw int64, t *ir.Tensor) {
	p := s.m.opts.Dropout
	fillDropoutMask(t.Float32s(), p, rand.NewPCG(mix(s.m.seed, draw, 0), nameSeed(name)))
}

// fillDropoutMask fills v with a dropout mask of probability p drawn from
// src (FillStepInput).
func fillDropoutMask(v []float32, p float64, src *rand.PCG) {
	drop := uint64(math.Round(p * (1 << 16)))
	// values[(u − drop) >> 63] is 1/(1−p) when u ≥ drop, else 0: no
	// branch on a random bit.
	values := [2]float32{float32(1 / (1 - p)), 0}
	j := 0
	for ; j+4 <= len(v); j += 4 {
		r := src.Uint64()
		w := v[j : j+4 : j+4]
		w[0] = values[(r&0xffff-drop)>>63]
		w[1] = values[(r>>16&0xffff-drop)>>63]
		w[2] = values[(r>>32&0xffff-drop)>>63]
		w[3] = values[(r>>48-drop)>>63]
	}
	if j < len(v) {
		r := src.Uint64()
		for k := range len(v) - j {
			v[j+k] = values[(r>>(16*k)&0xffff-drop)>>63]
		}
	}
}
