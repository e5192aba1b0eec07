package tpu

import (
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/peft"
	"github.com/dstune/dstune/train"
)

// TestEnginePEFTMatchesCPU trains tiny_gpt with LoRA (dropout on: the
// masks are inputs fed every step) and with prompt tuning (the prompted
// graph) for 10 steps on the pjrt engine with the evaluator as its device
// and on the CPU engine: the losses agree within 1e-3 relative.
func TestEnginePEFTMatchesCPU(t *testing.T) {
	for name, set := range map[string]func(c *train.Config){
		"lora": func(c *train.Config) {
			c.Method, c.LoRA = train.MethodLoRA, peft.LoRAOptions{Rank: 2, Alpha: 4, Dropout: 0.1, Targets: []string{"attn_qkv", "mlp_out"}}.JSON()
		},
		"prompt": func(c *train.Config) {
			c.Method, c.Prompt = train.MethodPrompt, peft.PromptOptions{Length: 3, At: peft.PromptAfterBOS, Init: peft.PromptInitVocab}.JSON()
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := tinyRun(t, "cpu", "", 10)
			cfg.DST, cfg.CheckpointEvery = nil, 10
			cfg.Optimizer.SetLR(1e-2)
			set(&cfg)
			cpuDir, devDir := filepath.Join(t.TempDir(), "cpu"), filepath.Join(t.TempDir(), "pjrt")
			if _, err := train.Run(t.Context(), cfg, train.RunOptions{Dir: cpuDir}); err != nil {
				t.Fatal(err)
			}
			cfg.Backend = evalBackend
			if _, err := train.Run(t.Context(), cfg, train.RunOptions{Dir: devDir}); err != nil {
				t.Fatal(err)
			}
			c, err := compareRuns(t, cpuDir, devDir)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d steps: worst loss rel diff %.2g, validation %.2g over %d", c.steps, c.worstLossRel, c.worstValidRel, c.validations)
			if c.steps != 10 || c.worstLossRel > 1e-3 || c.worstValidRel > 1e-3 {
				for _, l := range c.lines {
					t.Log(l)
				}
				t.Errorf("losses differ by up to %.2g (validation %.2g) relative", c.worstLossRel, c.worstValidRel)
			}
		})
	}
}
