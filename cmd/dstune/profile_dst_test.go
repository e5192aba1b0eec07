package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestProfileDSTQuick runs the DST profiles at their --quick sizes (a smoke
// test of the command, not a measurement) and checks every JSON line: the
// kernels named, a positive time and bandwidth, and the peak measured.
func TestProfileDSTQuick(t *testing.T) {
	for _, kernel := range []string{"score-count", "select", "masked-update"} {
		var out, errb bytes.Buffer
		if code := runMain([]string{"profile", kernel, "--quick", "--json", "--threads", "2"}, &out, &errb); code != 0 {
			t.Fatalf("profile %s: exit %d, stderr %q", kernel, code, errb.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) < 2 {
			t.Fatalf("profile %s printed %d lines: %q", kernel, len(lines), out.String())
		}
		for _, line := range lines {
			var r profileRecord
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("profile %s: %q: %v", kernel, line, err)
			}
			if r.MS <= 0 || r.GBPS <= 0 || r.PeakGBPS <= 0 || r.Threads < 1 || r.Shape == "" {
				t.Errorf("profile %s: implausible record %+v", kernel, r)
			}
		}
	}
}
