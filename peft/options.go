package peft

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dstune/dstune/dst"
)

// LoRAOptions configure --method lora. A run's config.json stores them as
// its "lora" object; the targets by name are the run's --trainable.
type LoRAOptions struct {
	Rank    int     `json:"rank"`    // r: the adapters' inner dimension
	Alpha   float64 `json:"alpha"`   // α: the adapter's output is scaled by α/r
	Dropout float64 `json:"dropout"` // dropout on the adapter's input, in training only
	// Targets are the module kinds whose linear layers get adapters
	// (dstune inspect's kinds, without ".weight"); empty: DefaultTargets,
	// or every linear kind when the run's --trainable picks the weights.
	Targets []string `json:"targets,omitempty"`
}

// DefaultTargets are the kinds LoRA adapts by default: every attention
// projection and both MLP layers.
var DefaultTargets = []string{dst.KindAttnQ, dst.KindAttnK, dst.KindAttnV, dst.KindAttnQKV, dst.KindAttnKV, dst.KindAttnOut, dst.KindMLPIn, dst.KindMLPOut}

// linearKinds are the module kinds of linear layers: what --targets may
// name.
var linearKinds = append(slices.Clone(DefaultTargets), dst.KindHead, dst.KindLinear)

// DefaultLoRAOptions are PEFT's LoraConfig defaults: r = 8, α = 8, no
// dropout, the default targets.
func DefaultLoRAOptions() LoRAOptions { return LoRAOptions{Rank: 8, Alpha: 8} }

// ParseLoRAOptions reads a run's "lora" object (the defaults when there
// is none) and checks it.
func ParseLoRAOptions(raw json.RawMessage) (LoRAOptions, error) {
	o := DefaultLoRAOptions()
	if err := decodeStrict(raw, &o); err != nil {
		return o, fmt.Errorf("lora options: %w", err)
	}
	return o, o.Check()
}

// JSON is the options' configuration form (what ParseLoRAOptions reads).
func (o LoRAOptions) JSON() json.RawMessage { return mustJSON(o) }

// Scale is the factor α/r of the adapters' output.
func (o LoRAOptions) Scale() float64 { return o.Alpha / float64(o.Rank) }

// Check reports what makes the options unusable, naming the flag.
func (o LoRAOptions) Check() error {
	switch {
	case o.Rank < 1:
		return fmt.Errorf("lora: --rank %d, want ≥ 1", o.Rank)
	case o.Rank > maxRank:
		return fmt.Errorf("lora: --rank %d, want at most %d", o.Rank, maxRank)
	case math.IsNaN(o.Alpha) || math.IsInf(o.Alpha, 0) || o.Alpha == 0:
		return fmt.Errorf("lora: --alpha %g, want a finite number other than 0", o.Alpha)
	case !(o.Dropout >= 0 && o.Dropout < 1):
		return fmt.Errorf("lora: --lora-dropout %g, want a probability in [0, 1)", o.Dropout)
	}
	seen := map[string]bool{}
	for _, k := range o.Targets {
		switch {
		case seen[k]:
			return fmt.Errorf("lora: --targets names %s twice", k)
		case k == dst.KindEmbedding:
			return fmt.Errorf("lora: --targets %s: LoRA adapts linear layers, and an embedding table is not one (want some of %s)", k, strings.Join(linearKinds, ", "))
		case !slices.Contains(linearKinds, k):
			return fmt.Errorf("lora: --targets: unknown module kind %q (want some of %s)", k, strings.Join(linearKinds, ", "))
		}
		seen[k] = true
	}
	return nil
}

// maxRank bounds r: an adapter wider than this is no longer low-rank for
// any model dstune trains, and the bound keeps a typo from allocating
// without limit.
const maxRank = 1 << 16

// Where the soft prompt goes (--prompt-at).
const (
	PromptAfterBOS = "after-bos" // after the first position, which stays first (Llama's BOS)
	PromptStart    = "start"     // before every token, as PEFT's prompt tuning does
)

// Prompt initializations (--prompt-init).
const (
	PromptInitVocab  = "vocab"  // the embeddings of sampled vocabulary ids
	PromptInitRandom = "random" // normal, with the embedding table's mean and standard deviation
)

// PromptOptions configure --method prompt. A run's config.json stores
// them as its "prompt" object.
type PromptOptions struct {
	Length int    `json:"length"` // n: virtual tokens
	At     string `json:"at"`     // after-bos | start
	Init   string `json:"init"`   // vocab | random
}

// DefaultPromptOptions: 10 virtual tokens (where the paper's prompt
// tuning peaks), after the first position, initialized from the
// vocabulary.
func DefaultPromptOptions() PromptOptions {
	return PromptOptions{Length: 10, At: PromptAfterBOS, Init: PromptInitVocab}
}

// ParsePromptOptions reads a run's "prompt" object (the defaults when
// there is none) and checks it.
func ParsePromptOptions(raw json.RawMessage) (PromptOptions, error) {
	o := DefaultPromptOptions()
	if err := decodeStrict(raw, &o); err != nil {
		return o, fmt.Errorf("prompt options: %w", err)
	}
	return o, o.Check()
}

// JSON is the options' configuration form.
func (o PromptOptions) JSON() json.RawMessage { return mustJSON(o) }

// maxPromptLen bounds the virtual tokens.
const maxPromptLen = 1 << 16

// Check reports what makes the options unusable, naming the flag.
func (o PromptOptions) Check() error {
	switch {
	case o.Length < 1 || o.Length > maxPromptLen:
		return fmt.Errorf("prompt: --prompt-len %d, want 1 to %d", o.Length, maxPromptLen)
	case o.At != PromptAfterBOS && o.At != PromptStart:
		return fmt.Errorf("prompt: --prompt-at %q, want %s or %s", o.At, PromptAfterBOS, PromptStart)
	case o.Init != PromptInitVocab && o.Init != PromptInitRandom:
		return fmt.Errorf("prompt: --prompt-init %q, want %s or %s", o.Init, PromptInitVocab, PromptInitRandom)
	}
	return nil
}

func decodeStrict(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func mustJSON(v any) json.RawMessage {
	data, err := json.Marshal(v)
	if err != nil {
		panic("peft: options do not encode: " + err.Error())
	}
	return data
}
