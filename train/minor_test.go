package train

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstune/dstune/update"
)

// A fresh run that stopped before its first checkpoint saved nothing: a
// retry with the same directory starts over instead of being refused.
func TestRunRetriesAfterARunThatSavedNothing(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 8)
	dir := crashedRun(t, cfg, 1)
	if HasCheckpoint(dir) {
		t.Fatal("a checkpoint after step 1")
	}
	var out bytes.Buffer
	res, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1), Progress: &out})
	if err != nil || res.Step != 8 || !strings.Contains(out.String(), "holds a run that saved no checkpoint: starting over") {
		t.Fatalf("retry: %+v, %v\n%s", res, err, out.String())
	}
	// With a checkpoint, a fresh run is refused as before.
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Errorf("fresh run over a run with a checkpoint: %v", err)
	}
}

// Resuming a complete run takes no step and says so (no "training loss
// 0").
func TestResumeOfACompleteRun(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 4)
	dir := filepath.Join(t.TempDir(), "run")
	if _, err := Run(context.Background(), cfg, RunOptions{Dir: dir, Source: newBigramSource(runVocab, 1)}); err != nil {
		t.Fatal(err)
	}
	res, err := resume(cfg, dir, false)
	if err != nil || res.Step != 4 || !math.IsNaN(res.Loss) {
		t.Errorf("resume of a complete run: %+v, %v", res, err)
	}
}

// lm data in which nothing counts in the loss is refused; examples or
// batches without targets are reported.
func TestRunReportsDataWithoutTargets(t *testing.T) {
	cfg := runConfig(t, update.OptimizerAdamW, 4)
	cfg.Valid = ""
	dir := t.TempDir()
	none := filepath.Join(dir, "none.jsonl")
	if err := os.WriteFile(none, []byte(`{"tokens":[1,2,3],"loss_mask":[1,0,0]}`+"\n"+`{"tokens":[4,5],"loss_mask":[0,0]}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := cfg
	c.Data = none
	_, err := Run(context.Background(), c, RunOptions{Dir: filepath.Join(dir, "none"), Source: newBigramSource(runVocab, 1)})
	if err == nil || !strings.Contains(err.Error(), "no example has a token that counts in the loss") {
		t.Errorf("no targets at all: %v", err)
	}
	// --max-len 2 cuts the only marked token off.
	cut := filepath.Join(dir, "cut.jsonl")
	if err := os.WriteFile(cut, []byte(`{"tokens":[1,2,3],"loss_mask":[0,0,1]}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Data, c.MaxLen = cut, 2
	if _, err := Run(context.Background(), c, RunOptions{Dir: filepath.Join(dir, "cut"), Source: newBigramSource(runVocab, 1)}); err == nil || !strings.Contains(err.Error(), "no example has a token") {
		t.Errorf("targets cut by --max-len: %v", err)
	}
	// One example of three has targets (dstune train's test shows the
	// batches without any).
	some := filepath.Join(dir, "some.jsonl")
	if err := os.WriteFile(some, []byte(`{"tokens":[1,2,3],"loss_mask":[0,0,0]}`+"\n"+`{"tokens":[4,5,6]}`+"\n"+`{"tokens":[7]}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Data, c.MaxLen, c.Batch = some, 0, 3 // every batch has a target: the test graph's loss is NaN without one
	var out bytes.Buffer
	if _, err := Run(context.Background(), c, RunOptions{Dir: filepath.Join(dir, "some"), Source: newBigramSource(runVocab, 1), Progress: &out}); err != nil {
		t.Fatal(err)
	}
	if want := "2 of 3 examples have no token that counts in the loss (one token,"; !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
}
