package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
)

func TestInspectSilos(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny_gpt", "model.onnx")
	code, out, stderr := dstune("inspect", model, "--json", "--eps", "0.01")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Modules) != 28 || len(rep.Silos["module-layer"]) != 28 || len(rep.Silos["module"]) != 15 || len(rep.Silos["none"]) != 1 {
		t.Fatalf("%d modules; silos: %d module-layer, %d module, %d none", len(rep.Modules), len(rep.Silos["module-layer"]), len(rep.Silos["module"]), len(rep.Silos["none"]))
	}
	if none := rep.Silos["none"][0]; none.Elements != 120576 || none.K != 1206 {
		t.Fatalf("silo none: %+v", none)
	}
	for _, s := range rep.Silos["module"] {
		if s.Name == "attn_qkv.weight" && (strings.Join(s.Params, " ") != "h.0.c_attn.weight h.1.c_attn.weight" || s.Elements != 24576 || s.K != 246) {
			t.Fatalf("module silo %+v", s)
		}
	}
	var total int64
	for _, s := range rep.Silos["module"] {
		total += s.Elements
	}
	if total != 120576 {
		t.Fatalf("module silos hold %d entries, the model 120,576", total)
	}

	code, out, _ = dstune("inspect", model, "--trainable", `^h\.1\.`)
	if code != 0 || !strings.Contains(out, "--silo none: one silo of 12 tensors") || strings.Contains(out, "wte.weight                       embedding") {
		t.Fatalf("--trainable: exit %d\n%s", code, out)
	}
	// One tensor: singular nouns; none: said, not listed as zero silos.
	code, out, _ = dstune("inspect", model, "--trainable", `^ln_f\.bias$`)
	if code != 0 || !strings.Contains(out, "--silo module-layer (the default), 1 silo, one per tensor") || !strings.Contains(out, "--silo none: one silo of 1 tensor, 64 entries") {
		t.Fatalf("--trainable of one tensor: exit %d\n%s", code, out)
	}
	code, out, _ = dstune("inspect", model, "--trainable", "nomatch")
	if code != 0 || !strings.Contains(out, `--trainable "nomatch" matches no parameter (train refuses it)`) || strings.Contains(out, "0 silos") {
		t.Fatalf("--trainable matching nothing: exit %d\n%s", code, out)
	}
	if code, _, stderr := dstune("inspect", model, "--eps", "2"); code != 2 || !strings.Contains(stderr, "--eps") {
		t.Fatalf("--eps 2: exit %d, %s", code, stderr)
	}
}
