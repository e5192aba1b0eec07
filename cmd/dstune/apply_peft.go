package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/ir"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/peft"
)

// What dstune apply and dstune run --delta do with the files of LoRA and
// prompt-tuning runs (package peft's adapter files, also PEFT's own): a
// LoRA adapter is merged into the weights — W + (α/r)·B·A, as a dense
// delta composed with the others in order — and a soft prompt is built
// into the graph (peft.InsertPrompt) after the deltas are applied.

// readAdapterFile reads path when it holds a LoRA adapter or a soft prompt
// (nil when it is a DST delta).
func readAdapterFile(path string) (*peft.Adapter, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil || !peft.IsAdapter(f) {
		return nil, nil // dst.ReadDelta reports what is wrong with the file
	}
	return peft.ReadAdapter(path)
}

// readDeltaFile reads a delta: a DST delta, or a LoRA adapter merged into
// the base initializers inits as a dense delta. A soft prompt is not a
// delta (splitPrompt takes it out first).
func readDeltaFile(path string, inits []dst.Initializer) (*dst.Delta, error) {
	a, err := readAdapterFile(path)
	if err != nil {
		return nil, err
	}
	if a == nil {
		return dst.ReadDelta(path)
	}
	if a.LoRA == nil {
		return nil, fmt.Errorf("%s: a soft prompt changes the graph, not the weights: dstune apply builds it into a model (and apply and run take at most one)", path)
	}
	tensors, err := a.LoRA.Delta(inits)
	if err != nil {
		return nil, fmt.Errorf("%s: %w%s", path, err, otherBase(a.BaseSHA256, inits))
	}
	d := &dst.Delta{Meta: dst.Metadata{BaseSHA256: a.BaseSHA256, Method: "lora", Steps: a.Steps,
		Extra: map[string]string{"r": strconv.Itoa(a.LoRA.Rank), "lora_alpha": strconv.FormatFloat(a.LoRA.Alpha, 'g', -1, 64)}}, Tensors: tensors}
	return d, nil
}

// splitPrompt takes the soft prompt (at most one) out of the files given
// as deltas, checking that it was made for the base model (inits) unless
// force, which warns on stderr instead.
func splitPrompt(stderr io.Writer, paths []string, inits []dst.Initializer, force bool) (deltas []string, prompt *peft.SoftPrompt, promptPath string, err error) {
	for _, path := range paths {
		a, err := readAdapterFile(path)
		if err != nil {
			return nil, nil, "", err
		}
		if a == nil || a.Prompt == nil {
			deltas = append(deltas, path)
			continue
		}
		if prompt != nil {
			return nil, nil, "", fmt.Errorf("%s: a second soft prompt; give at most one", path)
		}
		if err := (&dst.Delta{Meta: dst.Metadata{BaseSHA256: a.BaseSHA256}}).CheckBase(inits); err != nil {
			if !force {
				return nil, nil, "", fmt.Errorf("soft prompt %s: %w (--force applies it anyway)", path, err)
			}
			fmt.Fprintf(stderr, "warning: soft prompt %s: %v; applying it anyway (--force)\n", path, err)
		}
		prompt, promptPath = a.Prompt, path
	}
	return deltas, prompt, promptPath, nil
}

// writePrompted writes m, its initializers replaced by newValues, with the
// soft prompt built into its graph: a re-encoded model; with noReplace,
// not over a file that is there by then.
func writePrompted(stdout io.Writer, out string, m *onnx.Model, newValues map[string][]byte, prompt *peft.SoftPrompt, promptPath string, noReplace bool) error {
	for i, it := range m.Graph.Initializers {
		if v, ok := newValues[it.Name]; ok {
			nt, err := onnx.NewTensor(it.Name, it.DataType, it.Dims, v)
			if err != nil {
				return fmt.Errorf("initializer %q: %w", it.Name, err)
			}
			m.Graph.Initializers[i] = nt
		}
	}
	pm, err := peft.InsertPrompt(m, prompt)
	if err == nil {
		err = checkPromptRoom(pm, prompt)
	}
	if err != nil {
		return fmt.Errorf("soft prompt %s: %w", promptPath, err)
	}
	if err := onnx.WriteFile(out, pm, onnx.WriteOptions{NoReplace: noReplace}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: re-encoded the whole model with the soft prompt (%d virtual tokens, %s) built into its graph as %s\n",
		out, prompt.Length, prompt.At, peft.PromptParam)
	return nil
}

// checkPromptRoom refuses a prompted model that cannot take one token of
// text: a soft prompt as long as the model's position table (made for
// another model, or by hand) leaves no position for the text, and the
// model written would fail on every input.
func checkPromptRoom(pm *onnx.Model, prompt *peft.SoftPrompt) error {
	model, err := ir.NewModelShared(pm)
	if err != nil {
		return fmt.Errorf("the prompted model: %w", err)
	}
	values, err := textInputs(model, []int{0}, io.Discard)
	if err != nil {
		return nil // not a language model dstune can feed text: nothing to check
	}
	g, feeds, err := specializeInputs(model, values)
	if err == nil {
		err = checkTableIndices(g, feeds)
	}
	if err != nil {
		return fmt.Errorf("the soft prompt's %d virtual tokens leave the model no room for text: with one token of text it fails: %w", prompt.Length, err)
	}
	return nil
}

// withDeltas applies the deltas (DST deltas and LoRA adapters) to model's
// parameters and, when one of the files is a soft prompt, returns the
// model re-imported from base with the prompt built in, holding the same
// parameter values. force is apply's --force: files made for another base
// model (or recording none, as PEFT's) are applied with a warning, and a
// later delta wins where two change one entry.
func withDeltas(base *onnx.Model, model *ir.Model, paths []string, force bool, stderr io.Writer) (*ir.Model, error) {
	inits, err := baseInitializers(base)
	if err != nil {
		return nil, fmt.Errorf("--delta: %w", err)
	}
	deltas, prompt, promptPath, err := splitPrompt(stderr, paths, inits, force)
	if err != nil {
		return nil, fmt.Errorf("--delta: %w", err)
	}
	if len(deltas) > 0 {
		if err := applyDeltas(model, deltas, force, stderr); err != nil {
			return nil, err
		}
	}
	if prompt == nil {
		return model, nil
	}
	pm, err := peft.InsertPrompt(base, prompt)
	if err != nil {
		return nil, fmt.Errorf("--delta: soft prompt %s: %w", promptPath, err)
	}
	prompted, err := ir.NewModelShared(pm)
	if err != nil {
		return nil, fmt.Errorf("--delta: the prompted model: %w", err)
	}
	for _, p := range model.Params {
		if np := prompted.Param(p.Name); np != nil {
			copy(np.Tensor.Bytes(), p.Tensor.Bytes())
		}
	}
	return prompted, nil
}
