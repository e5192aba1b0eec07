package peft

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/atomicfile"
	"github.com/dstune/dstune/internal/regfile"
	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/ir"
)

// The files a LoRA or prompt-tuning run keeps in its run directory, in
// PEFT's layout (PeftModel.from_pretrained reads the directory): the
// tensors, and the configuration PEFT needs to rebuild the adapter.
const (
	AdapterFile       = "adapter_model.safetensors"
	AdapterConfigFile = "adapter_config.json"
)

// PEFT's key names: a LoRA module's matrices are
// base_model.model.<module path>.lora_A.weight ([r, in]) and .lora_B.weight
// ([out, r]); a soft prompt is prompt_embeddings ([n, d]).
const (
	keyPrefix     = "base_model.model."
	loraASuffix   = ".lora_A.weight"
	loraBSuffix   = ".lora_B.weight"
	promptKey     = "prompt_embeddings"
	metaMethod    = "method"
	metaBase      = "base_sha256"
	metaSteps     = "steps"
	metaRank      = "r"
	metaAlpha     = "lora_alpha"
	metaDropout   = "lora_dropout"
	metaTargets   = "targets"
	metaPromptAt  = "prompt_at"
	metaFree      = "free_params"
	metaBaseCount = "base_params"
)

// ModulePath is the PyTorch module path of an initializer, which PEFT's
// keys name: the initializer's name without ".weight" (exports that keep
// PyTorch's names, as torch.onnx does without constant folding; an
// initializer named otherwise keeps its whole name).
func ModulePath(initializer string) string { return strings.TrimSuffix(initializer, ".weight") }

// Adapter is a LoRA adapter or a soft prompt as its file holds it.
type Adapter struct {
	Method     string // "lora" or "prompt"
	BaseSHA256 string // the base model's dst.BaseHash ("" when the file records none)
	Steps      int64  // optimizer steps taken (0: unknown)
	// FreeParams and BaseParams are the budget: the adapter's parameters
	// and the base model's trainable parameters (0: unknown).
	FreeParams, BaseParams int64
	LoRA                   *LoRAWeights
	Prompt                 *SoftPrompt
}

// LoRAWeights are a LoRA adapter's matrices.
type LoRAWeights struct {
	Rank    int
	Alpha   float64
	Dropout float64
	Modules []LoRAModule
}

// Scale is α/r.
func (w *LoRAWeights) Scale() float64 { return w.Alpha / float64(w.Rank) }

// LoRAModule is one adapted linear layer: W (In×Out entries) becomes
// W + Scale·B·A in nn.Linear's [out, in] layout, transposed when the
// initializer is stored [in, out] (FanInFanOut).
type LoRAModule struct {
	Path        string // PEFT's module path
	Weight      string // the initializer; "" when the file does not say (found by Path)
	FanInFanOut bool
	In, Out     int
	A           []float32 // [r, in], row-major
	B           []float32 // [out, r]
}

// SoftPrompt is prompt tuning's virtual tokens: Length rows of Dim
// embedding values, inserted At after-bos or start.
type SoftPrompt struct {
	At          string
	Length, Dim int
	Values      []float32 // [Length, Dim], row-major
}

// targetInfo is one entry of a LoRA file's "targets" metadata.
type targetInfo struct {
	Module      string `json:"module"`
	Initializer string `json:"initializer"`
	FanInFanOut bool   `json:"fan_in_fan_out"`
}

// WriteAdapter writes a's AdapterFile and AdapterConfigFile into dir,
// each atomically; task is the run's task (lm or classify).
func WriteAdapter(dir string, a *Adapter, task string) error {
	meta := map[string]string{"format": "pt", metaMethod: a.Method}
	if a.BaseSHA256 != "" {
		meta[metaBase] = a.BaseSHA256
	}
	if a.Steps > 0 {
		meta[metaSteps] = strconv.FormatInt(a.Steps, 10)
	}
	if a.FreeParams > 0 {
		meta[metaFree] = strconv.FormatInt(a.FreeParams, 10)
		meta[metaBaseCount] = strconv.FormatInt(a.BaseParams, 10)
	}
	var tensors []safetensors.Tensor
	var config map[string]any
	switch {
	case a.LoRA != nil:
		w := a.LoRA
		meta[metaRank] = strconv.Itoa(w.Rank)
		meta[metaAlpha] = strconv.FormatFloat(w.Alpha, 'g', -1, 64)
		meta[metaDropout] = strconv.FormatFloat(w.Dropout, 'g', -1, 64)
		var targets []targetInfo
		var modules []string
		fanInFanOut := len(w.Modules) > 0
		for _, m := range w.Modules {
			if len(m.A) != w.Rank*m.In || len(m.B) != m.Out*w.Rank {
				return fmt.Errorf("peft: module %s: A has %d values, B %d, want %d and %d", m.Path, len(m.A), len(m.B), w.Rank*m.In, m.Out*w.Rank)
			}
			tensors = append(tensors,
				safetensors.Tensor{Name: keyPrefix + m.Path + loraASuffix, DType: safetensors.F32, Shape: []int64{int64(w.Rank), int64(m.In)}, Data: f32Bytes(m.A)},
				safetensors.Tensor{Name: keyPrefix + m.Path + loraBSuffix, DType: safetensors.F32, Shape: []int64{int64(m.Out), int64(w.Rank)}, Data: f32Bytes(m.B)})
			targets = append(targets, targetInfo{m.Path, m.Weight, m.FanInFanOut})
			modules = append(modules, m.Path)
			fanInFanOut = fanInFanOut && m.FanInFanOut
		}
		t, _ := json.Marshal(targets)
		meta[metaTargets] = string(t)
		config = map[string]any{
			"peft_type": "LORA", "task_type": peftTask(task), "r": w.Rank, "lora_alpha": w.Alpha, "lora_dropout": w.Dropout,
			"target_modules": modules, "fan_in_fan_out": fanInFanOut, "bias": "none", "use_rslora": false,
			"init_lora_weights": true, "inference_mode": true, "modules_to_save": nil, "base_model_name_or_path": nil,
			"revision": nil, "layers_to_transform": nil, "layers_pattern": nil, "rank_pattern": map[string]any{}, "alpha_pattern": map[string]any{},
		}
	case a.Prompt != nil:
		p := a.Prompt
		if len(p.Values) != p.Length*p.Dim {
			return fmt.Errorf("peft: soft prompt of %d×%d has %d values", p.Length, p.Dim, len(p.Values))
		}
		meta[metaPromptAt] = p.At
		tensors = []safetensors.Tensor{{Name: promptKey, DType: safetensors.F32, Shape: []int64{int64(p.Length), int64(p.Dim)}, Data: f32Bytes(p.Values)}}
		config = map[string]any{
			"peft_type": "PROMPT_TUNING", "task_type": peftTask(task), "num_virtual_tokens": p.Length, "token_dim": p.Dim,
			"num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM", "inference_mode": true, "base_model_name_or_path": nil, "revision": nil,
		}
	default:
		return errors.New("peft: an adapter holds LoRA weights or a soft prompt")
	}
	if err := safetensors.WriteFile(filepath.Join(dir, AdapterFile), meta, tensors); err != nil {
		return err
	}
	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, AdapterConfigFile), append(data, '\n'))
}

// peftTask is PEFT's task_type for a dstune task: the causal LM wrapper
// for lm; none (a plain PeftModel) for classify, whose head PEFT's
// sequence-classification wrapper would also want to train.
func peftTask(task string) any {
	if task == "lm" {
		return "CAUSAL_LM"
	}
	return nil
}

// IsAdapter reports whether a safetensors file holds a LoRA adapter or a
// soft prompt (rather than a DST delta): its metadata says so, or — a
// file PEFT wrote — its tensor names do.
func IsAdapter(f *safetensors.File) bool {
	switch f.Metadata[metaMethod] {
	case "lora", "prompt":
		return true
	case "":
	default:
		return false
	}
	for _, t := range f.Tensors {
		if t.Name == promptKey || strings.HasSuffix(t.Name, loraASuffix) || strings.HasSuffix(t.Name, loraBSuffix) {
			return true
		}
	}
	return false
}

// ReadAdapter reads an adapter file: one dstune wrote, or one PEFT saved
// (whose rank, α, layout and prompt position come from the
// adapter_config.json beside it). Every shape is checked, and every value
// must be finite. An AdapterFile that dstune wrote must agree with the
// AdapterConfigFile beside it, if there is one: PeftModel.from_pretrained
// loads the two together, so a disagreement means one of them is not what
// it claims to be.
func ReadAdapter(path string) (*Adapter, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, err
	}
	a, err := decodeAdapter(f, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

func decodeAdapter(f *safetensors.File, path string) (*Adapter, error) {
	if !IsAdapter(f) {
		return nil, errors.New("not a LoRA adapter or soft prompt")
	}
	meta := f.Metadata
	a := &Adapter{Method: meta[metaMethod], BaseSHA256: meta[metaBase]}
	var err error
	if a.Steps, err = metaInt(meta, metaSteps); err != nil {
		return nil, err
	}
	if a.FreeParams, err = metaInt(meta, metaFree); err != nil {
		return nil, err
	}
	if a.BaseParams, err = metaInt(meta, metaBaseCount); err != nil {
		return nil, err
	}
	var config peftConfig
	dir := filepath.Dir(path)
	switch {
	case a.Method == "": // written by PEFT: its configuration says the rest
		if config, err = readPEFTConfig(dir); err != nil {
			return nil, err
		}
		if !config.found {
			return nil, fmt.Errorf("the file records no dstune metadata and there is no %s beside it", AdapterConfigFile)
		}
		switch config.PeftType {
		case "LORA":
			a.Method = "lora"
		case "PROMPT_TUNING":
			a.Method = "prompt"
		default:
			return nil, fmt.Errorf("%s: peft_type %q: dstune reads LORA and PROMPT_TUNING adapters", AdapterConfigFile, config.PeftType)
		}
	case filepath.Base(path) == AdapterFile:
		// Written by dstune, under the name PEFT loads together with the
		// configuration beside it: the two must describe one adapter. (A
		// file renamed or copied elsewhere is no such pair, and a
		// configuration that happens to sit beside it says nothing of it.)
		if config, err = readPEFTConfig(dir); err != nil {
			return nil, err
		}
		want := map[string]string{"lora": "LORA", "prompt": "PROMPT_TUNING"}[a.Method]
		if config.found && config.PeftType != want {
			return nil, fmt.Errorf("%s beside it has peft_type %q, but the adapter's metadata has method %q (peft_type %s): the two files disagree", AdapterConfigFile, config.PeftType, a.Method, want)
		}
	}
	if a.Method == "prompt" {
		return a, a.decodePrompt(f, meta, config)
	}
	return a, a.decodeLoRA(f, meta, config)
}

// peftConfig is what dstune reads of a PEFT adapter_config.json.
type peftConfig struct {
	// found: the file exists (else every field is zero). given: the keys
	// it holds with a value other than null, so that a missing key is not
	// read as a 0 that disagrees with the adapter.
	found bool
	given map[string]bool

	PeftType         string         `json:"peft_type"`
	R                int            `json:"r"`
	LoraAlpha        float64        `json:"lora_alpha"`
	LoraDropout      float64        `json:"lora_dropout"`
	FanInFanOut      bool           `json:"fan_in_fan_out"`
	UseRSLoRA        bool           `json:"use_rslora"`
	NumVirtualTokens int            `json:"num_virtual_tokens"`
	TokenDim         int            `json:"token_dim"`
	NumSubmodules    int            `json:"num_transformer_submodules"`
	RankPattern      map[string]any `json:"rank_pattern"`
	AlphaPattern     map[string]any `json:"alpha_pattern"`
}

// readPEFTConfig reads the AdapterConfigFile in dir; one that does not
// exist is no error (found is false).
func readPEFTConfig(dir string) (peftConfig, error) {
	var c peftConfig
	path := filepath.Join(dir, AdapterConfigFile)
	data, err := regfile.ReadRegular(path, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(data, &keys); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	c.found, c.given = true, map[string]bool{}
	for k, v := range keys {
		c.given[k] = string(v) != "null"
	}
	switch {
	case c.UseRSLoRA:
		return c, fmt.Errorf("%s: use_rslora scales by α/√r; dstune merges α/r adapters", path)
	case len(c.RankPattern) > 0 || len(c.AlphaPattern) > 0:
		return c, fmt.Errorf("%s: rank_pattern and alpha_pattern give modules their own rank or α; dstune merges adapters of one rank and α", path)
	}
	return c, nil
}

func metaInt(meta map[string]string, key string) (int64, error) {
	s, ok := meta[key]
	if !ok {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("metadata %s = %q, want a count", key, s)
	}
	return v, nil
}

func (a *Adapter) decodeLoRA(f *safetensors.File, meta map[string]string, config peftConfig) error {
	w := &LoRAWeights{Rank: config.R, Alpha: config.LoraAlpha, Dropout: config.LoraDropout}
	fanInFanOut := map[string]bool{}
	weights := map[string]string{}
	if meta[metaMethod] != "" {
		r, err := strconv.Atoi(meta[metaRank])
		if err != nil {
			return fmt.Errorf("metadata %s = %q, want the rank", metaRank, meta[metaRank])
		}
		if w.Alpha, err = strconv.ParseFloat(meta[metaAlpha], 64); err != nil {
			return fmt.Errorf("metadata %s = %q, want α", metaAlpha, meta[metaAlpha])
		}
		w.Rank = r
		if s := meta[metaDropout]; s != "" {
			w.Dropout, _ = strconv.ParseFloat(s, 64)
		}
		var targets []targetInfo
		if err := json.Unmarshal([]byte(meta[metaTargets]), &targets); err != nil {
			return fmt.Errorf("metadata %s: %w", metaTargets, err)
		}
		for _, t := range targets {
			fanInFanOut[t.Module], weights[t.Module] = t.FanInFanOut, t.Initializer
		}
		// The configuration beside the file (decodeAdapter reads it only
		// when the two are a pair) must give the rank and α the metadata
		// does: PEFT would scale by its α/r, dstune by the metadata's.
		if config.found && config.given["r"] && config.R != w.Rank {
			return fmt.Errorf("%s beside it has r %d, but the adapter's metadata has r %d: the two files disagree", AdapterConfigFile, config.R, w.Rank)
		}
		if config.found && config.given["lora_alpha"] && config.LoraAlpha != w.Alpha {
			return fmt.Errorf("%s beside it has lora_alpha %g, but the adapter's metadata has lora_alpha %g: the two files disagree", AdapterConfigFile, config.LoraAlpha, w.Alpha)
		}
	}
	if w.Rank < 1 || w.Rank > maxRank || math.IsNaN(w.Alpha) || math.IsInf(w.Alpha, 0) || w.Alpha == 0 {
		return fmt.Errorf("rank %d and α %g: want a rank from 1 to %d and a finite α other than 0", w.Rank, w.Alpha, maxRank)
	}
	byPath := map[string]*LoRAModule{}
	var order []string
	for i := range f.Tensors {
		t := &f.Tensors[i]
		path, which, ok := loraKeyParts(t.Name)
		if !ok {
			return fmt.Errorf("tensor %q is not a LoRA matrix (%s<module>%s or %s)", t.Name, keyPrefix, loraASuffix, loraBSuffix)
		}
		if t.DType != safetensors.F32 || len(t.Shape) != 2 {
			return fmt.Errorf("tensor %q is %s%v, want a float32 matrix", t.Name, t.DType, t.Shape)
		}
		m := byPath[path]
		if m == nil {
			m = &LoRAModule{Path: path, Weight: weights[path], FanInFanOut: config.FanInFanOut}
			if v, ok := fanInFanOut[path]; ok {
				m.FanInFanOut = v
			}
			byPath[path] = m
			order = append(order, path)
		}
		rows, cols := int(t.Shape[0]), int(t.Shape[1])
		if which == "A" {
			if rows != w.Rank || m.A != nil {
				return fmt.Errorf("tensor %q is [%d %d], want [%d in] once", t.Name, rows, cols, w.Rank)
			}
			m.In, m.A = cols, f32Values(t.Data)
			if err := checkFinite(t, m.A); err != nil {
				return err
			}
		} else {
			if cols != w.Rank || m.B != nil {
				return fmt.Errorf("tensor %q is [%d %d], want [out %d] once", t.Name, rows, cols, w.Rank)
			}
			m.Out, m.B = rows, f32Values(t.Data)
			if err := checkFinite(t, m.B); err != nil {
				return err
			}
		}
	}
	slices.Sort(order)
	for _, path := range order {
		m := byPath[path]
		if m.A == nil || m.B == nil {
			return fmt.Errorf("module %s has only one of lora_A and lora_B", path)
		}
		w.Modules = append(w.Modules, *m)
	}
	if len(w.Modules) == 0 {
		return errors.New("the adapter has no LoRA matrices")
	}
	a.LoRA = w
	return nil
}

// checkFinite refuses a NaN or infinite value in an adapter's matrix t
// (values, decoded): merged into a weight or built into the graph it would
// make every output it reaches NaN or infinite, in a model that still
// loads and runs. It names the tensor and the value's flat index, row and
// column, as a DST delta's check names its value and index.
func checkFinite(t *safetensors.Tensor, values []float32) error {
	for i, v := range values {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			cols := int(t.Shape[1]) // ≥ 1: there are values
			return fmt.Errorf("tensor %q: value %d (row %d, column %d of %v) is %v; an adapter's values must be finite", t.Name, i, i/cols, i%cols, t.Shape, v)
		}
	}
	return nil
}

// loraKeyParts splits base_model.model.<path>.lora_A.weight.
func loraKeyParts(name string) (path, which string, ok bool) {
	rest, ok := strings.CutPrefix(name, keyPrefix)
	if !ok {
		return "", "", false
	}
	if p, ok := strings.CutSuffix(rest, loraASuffix); ok && p != "" {
		return p, "A", true
	}
	if p, ok := strings.CutSuffix(rest, loraBSuffix); ok && p != "" {
		return p, "B", true
	}
	return "", "", false
}

func (a *Adapter) decodePrompt(f *safetensors.File, meta map[string]string, config peftConfig) error {
	t := f.Tensor(promptKey)
	if t == nil || len(f.Tensors) != 1 {
		return fmt.Errorf("a soft prompt file holds the one tensor %s", promptKey)
	}
	if t.DType != safetensors.F32 || len(t.Shape) != 2 || t.Shape[0] < 1 || t.Shape[1] < 1 || t.Shape[0] > maxPromptLen {
		return fmt.Errorf("tensor %s is %s%v, want float32 [n ≤ %d, d]", promptKey, t.DType, t.Shape, maxPromptLen)
	}
	p := &SoftPrompt{At: meta[metaPromptAt], Length: int(t.Shape[0]), Dim: int(t.Shape[1]), Values: f32Values(t.Data)}
	if err := checkFinite(t, p.Values); err != nil {
		return err
	}
	// The configuration (PEFT's, or the one beside a file dstune wrote)
	// must describe this tensor: PEFT builds its prompt encoder from
	// num_virtual_tokens and token_dim, and would refuse or misread it.
	if config.found && config.given["num_virtual_tokens"] && config.NumVirtualTokens != p.Length {
		return fmt.Errorf("%s has num_virtual_tokens %d, but tensor %s is %v (%d virtual tokens): the two files disagree", AdapterConfigFile, config.NumVirtualTokens, promptKey, t.Shape, p.Length)
	}
	if config.found && config.given["token_dim"] && config.TokenDim != p.Dim {
		return fmt.Errorf("%s has token_dim %d, but tensor %s is %v (%d values a token): the two files disagree", AdapterConfigFile, config.TokenDim, promptKey, t.Shape, p.Dim)
	}
	if meta[metaMethod] == "" {
		// PEFT prepends the virtual tokens (one set: a decoder's).
		if config.NumSubmodules > 1 {
			return fmt.Errorf("%s: num_transformer_submodules %d: dstune inserts one prompt, for a decoder", AdapterConfigFile, config.NumSubmodules)
		}
		p.At = PromptStart
	}
	if p.At != PromptAfterBOS && p.At != PromptStart {
		return fmt.Errorf("metadata %s = %q, want %s or %s", metaPromptAt, p.At, PromptAfterBOS, PromptStart)
	}
	a.Prompt = p
	return nil
}

// Delta merges the LoRA adapter into the base model's initializers: for
// every module, the whole weight W + Scale·B·A (transposed for a
// FanInFanOut module), computed in float64 from the stored W, as a dense
// dst.TensorDelta whose ApplyRaw rounds it once to the initializer's own
// dtype (for an initializer other than float32 the delta keeps the
// float64 values too, so that a float64 weight gets them exactly and a
// float16 one is not rounded twice). The module's
// initializer is its Weight, else Path+".weight", else Path; its shape
// must fit. A merged value that is not finite in float32 — finite A and B
// whose product overflows, or a huge α — is an error naming the weight
// and the entry, as a DST delta's value beyond float32's range is: the
// written model would otherwise hold ±Inf (and compute NaN) silently.
func (w *LoRAWeights) Delta(inits []dst.Initializer) ([]dst.TensorDelta, error) {
	byName := map[string]*dst.Initializer{}
	for i := range inits {
		byName[inits[i].Name] = &inits[i]
	}
	scale := w.Scale()
	var out []dst.TensorDelta
	seen := map[string]bool{}
	for _, m := range w.Modules {
		var it *dst.Initializer
		if m.Weight != "" {
			if it = byName[m.Weight]; it == nil {
				return nil, fmt.Errorf("module %s: the adapter's targets name initializer %q, which the model does not have", m.Path, m.Weight)
			}
		} else if it = byName[m.Path+".weight"]; it == nil {
			if it = byName[m.Path]; it == nil {
				return nil, fmt.Errorf("module %s: the model has no initializer %s.weight (nor %s)", m.Path, m.Path, m.Path)
			}
		}
		if seen[it.Name] {
			return nil, fmt.Errorf("module %s: initializer %q is adapted twice", m.Path, it.Name)
		}
		seen[it.Name] = true
		want := []int64{int64(m.Out), int64(m.In)}
		if m.FanInFanOut {
			want = []int64{int64(m.In), int64(m.Out)}
		}
		if !slices.Equal(it.Dims, want) {
			return nil, fmt.Errorf("module %s: initializer %q is %v, the adapter (in %d, out %d, fan_in_fan_out %v) wants %v", m.Path, it.Name, it.Dims, m.In, m.Out, m.FanInFanOut, want)
		}
		base, err := initializerFloats(it)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Path, err)
		}
		td := dst.TensorDelta{Name: it.Name, Dims: slices.Clone(it.Dims), Indices: make([]int64, len(base)), Values: make([]float32, len(base))}
		if it.DType != "F32" {
			td.Values64 = make([]float64, len(base))
		}
		r := w.Rank
		for o := range m.Out {
			for i := range m.In {
				var ba float64
				for k := range r {
					ba += float64(m.B[o*r+k]) * float64(m.A[k*m.In+i])
				}
				pos := o*m.In + i
				if m.FanInFanOut {
					pos = i*m.Out + o
				}
				merged := base[pos] + scale*ba
				v := float32(merged)
				if math.IsNaN(merged) || math.IsInf(float64(v), 0) {
					return nil, fmt.Errorf("module %s: initializer %q entry %d (W%v): W + (α/r)·B·A = %.7g + %.7g·%.7g = %.7g, %s",
						m.Path, it.Name, pos, entryIndex(pos, it.Dims), base[pos], scale, ba, merged, notFinite(merged))
				}
				td.Indices[pos] = int64(pos)
				td.Values[pos] = v
				if td.Values64 != nil {
					td.Values64[pos] = merged
				}
			}
		}
		out = append(out, td)
	}
	return out, nil
}

// entryIndex is the flat position pos of a matrix of dims as [row column].
func entryIndex(pos int, dims []int64) []int {
	cols := int(dims[1])
	return []int{pos / cols, pos % cols}
}

// notFinite says why a merged value cannot be written.
func notFinite(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "not a finite number; a merged weight must be finite"
	}
	return fmt.Sprintf("beyond float32's range (±%.7g); a merged weight must fit float32", math.MaxFloat32)
}

// initializerFloats decodes a floating-point initializer's values.
func initializerFloats(it *dst.Initializer) ([]float64, error) {
	dt, ok := map[string]ir.DType{"F32": ir.Float32, "F16": ir.Float16, "BF16": ir.BFloat16, "F64": ir.Float64}[it.DType]
	if !ok {
		return nil, fmt.Errorf("initializer %q is %s, not a floating-point tensor", it.Name, it.DType)
	}
	shape := make(ir.Shape, len(it.Dims))
	for i, d := range it.Dims {
		shape[i] = int(d)
	}
	t := ir.NewTensor(dt, shape)
	if len(it.Data) != len(t.Bytes()) {
		return nil, fmt.Errorf("initializer %q has %d bytes for %v %s", it.Name, len(it.Data), it.Dims, it.DType)
	}
	copy(t.Bytes(), it.Data)
	return ir.Convert(t, ir.Float64).Float64s(), nil
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func f32Values(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}
