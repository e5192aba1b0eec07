package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestProfileElemQuick(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain([]string{"profile", "elem", "--quick", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r profileRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if r.MS <= 0 || r.GBPS <= 0 || r.Threads != 1 {
			t.Errorf("implausible record %+v", r)
		}
		seen[r.Kernel] = true
	}
	for _, k := range []string{"softmax-xent", "layernorm", "layernorm-bwd", "gelu", "gelu-bwd", "attn-softmax", "attn-softmax-causal", "softmax-bwd"} {
		if !seen[k] {
			t.Errorf("no record for %s", k)
		}
	}
}
