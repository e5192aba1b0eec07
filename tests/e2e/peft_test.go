package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/safetensors"
	"github.com/dstune/dstune/internal/sharedtest"
	"github.com/dstune/dstune/onnx"
	"github.com/dstune/dstune/peft"
)

// checkMerged: the model dstune apply wrote from a LoRA adapter holds
// W + (α/r)·B·A — computed here in float64 from the run's last checkpoint
// and rounded once — for every adapted weight, and the base model's bytes
// everywhere else.
func checkMerged(t *testing.T, base, merged, run string, scale float64) {
	t.Helper()
	ckpt, err := safetensors.ReadFile(filepath.Join(run, "checkpoint", "params.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	adapters := map[string]safetensors.Tensor{}
	for _, tn := range ckpt.Tensors {
		adapters[tn.Name] = tn
	}
	baseInits, _ := initializers(t, base)
	mergedInits, _ := initializers(t, merged)
	adapted := 0
	for name, b := range baseInits {
		got := mergedInits[name]
		path := strings.TrimSuffix(name, ".weight")
		A, okA := adapters["base_model.model."+path+".lora_A.weight"]
		B, okB := adapters["base_model.model."+path+".lora_B.weight"]
		if !okA || !okB {
			if string(got) != string(b) {
				t.Errorf("%s changed, but has no adapter", name)
			}
			continue
		}
		adapted++
		// tiny_gpt stores nn.Linear's weights [out, in].
		r, in, out := int(A.Shape[0]), int(A.Shape[1]), int(B.Shape[0])
		w, a, bb, m := sharedtest.Float32s(b), sharedtest.Float32s(A.Data), sharedtest.Float32s(B.Data), sharedtest.Float32s(got)
		for o := range out {
			for i := range in {
				var ba float64
				for k := range r {
					ba += float64(bb[o*r+k]) * float64(a[k*in+i])
				}
				if want := float32(float64(w[o*in+i]) + scale*ba); m[o*in+i] != want {
					t.Fatalf("%s[%d,%d] = %v, W + (α/r)·B·A = %v", name, o, i, m[o*in+i], want)
				}
			}
		}
	}
	if adapted == 0 {
		t.Fatal("no adapted weight")
	}
	t.Logf("%d weights merged as W + (α/r)·B·A", adapted)
}

// TestLoRA: tiny_gpt fine-tuned with LoRA (dropout on) on text, the
// adapter in PEFT's layout, merged by dstune apply (in place), checked
// against the formula, bit for bit against dstune run --delta, and in
// onnxruntime.
func TestLoRA(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	dir := t.TempDir()
	trainPath, validPath := byteWindows(t, dir)
	run := filepath.Join(dir, "run")
	dstune(t, "train", model, "--data", trainPath, "--valid", validPath, "--task", "lm", "--method", "lora", "--rank", "4", "--alpha", "16",
		"--lora-dropout", "0.1", "--steps", "20", "--batch", "4", "--lr", "1e-2", "--threads", "2", "--out", run)
	var config struct {
		PeftType      string   `json:"peft_type"`
		R             int      `json:"r"`
		Alpha         float64  `json:"lora_alpha"`
		TargetModules []string `json:"target_modules"`
		FanInFanOut   bool     `json:"fan_in_fan_out"`
	}
	data, err := os.ReadFile(filepath.Join(run, peft.AdapterConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &config); err != nil {
		t.Fatal(err)
	}
	if config.PeftType != "LORA" || config.R != 4 || config.Alpha != 16 || config.FanInFanOut || len(config.TargetModules) != 8 {
		t.Errorf("adapter_config.json: %+v", config)
	}
	adapter := filepath.Join(run, peft.AdapterFile)
	merged := filepath.Join(dir, "merged.onnx")
	if out := dstune(t, "apply", model, adapter, "-o", merged); !strings.Contains(out, "patched in place") {
		t.Errorf("apply:\n%s", out)
	}
	checkMerged(t, model, merged, run, 16.0/4)
	tokens, err := onnx.ReadTensorFile(sharedtest.Path(t, "models", "tiny_gpt", "test_data_set_0", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	tokens.Name = "tokens"
	checkORT(t, model, merged, adapter, tokens)
}

// TestPromptTuning: stories260K (a Llama) and tiny_gpt prompt-tuned, the
// soft prompt after the first token and before every token; dstune apply
// writes the model with the prompt in its graph, which dstune runs bit
// for bit as dstune run --delta does and onnxruntime reproduces.
func TestPromptTuning(t *testing.T) {
	for _, c := range []struct {
		model []string
		at    string
	}{
		{[]string{"models", "stories260K", "stories260K.onnx"}, peft.PromptAfterBOS},
		{[]string{"models", "tiny_gpt", "model.onnx"}, peft.PromptStart},
	} {
		t.Run(c.model[1]+"/"+c.at, func(t *testing.T) {
			model := sharedtest.Path(t, c.model...)
			dir := t.TempDir()
			trainPath, validPath := byteWindows(t, dir)
			if c.model[1] == "stories260K" {
				trainPath, validPath = storyRows(t, dir)
			}
			run := filepath.Join(dir, "run")
			dstune(t, "train", model, "--data", trainPath, "--valid", validPath, "--task", "lm", "--method", "prompt", "--prompt-len", "6",
				"--prompt-at", c.at, "--steps", "15", "--batch", "4", "--lr", "3e-2", "--threads", "2", "--max-len", "40", "--out", run)
			adapter := filepath.Join(run, peft.AdapterFile)
			prompted := filepath.Join(dir, "prompted.onnx")
			if out := dstune(t, "apply", model, adapter, "-o", prompted); !strings.Contains(out, "soft prompt (6 virtual tokens, "+c.at+")") {
				t.Errorf("apply:\n%s", out)
			}
			tokens, err := onnx.ReadTensorFile(sharedtest.Path(t, c.model[0], c.model[1], "test_data_set_0", "input_0.pb"))
			if err != nil {
				t.Fatal(err)
			}
			tokens.Name = "tokens"
			checkORT(t, model, prompted, adapter, tokens)
		})
	}
}

// storyRows writes lm data for stories260K: token ids of short sentences
// in its vocabulary (ids from its tokenizer's pieces would need the
// tokenizer; any ids below 512 after BOS will do for the checks here).
func storyRows(t *testing.T, dir string) (trainPath, validPath string) {
	t.Helper()
	var lines []string
	for i := range 48 {
		toks := []int{1}
		for j := range 20 {
			toks = append(toks, 3+(i*37+j*11)%500)
		}
		js, _ := json.Marshal(map[string][]int{"tokens": toks})
		lines = append(lines, string(js))
	}
	trainPath, validPath = filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "valid.jsonl")
	for path, part := range map[string][]string{trainPath: lines[:40], validPath: lines[40:]} {
		if err := os.WriteFile(path, []byte(strings.Join(part, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return trainPath, validPath
}
