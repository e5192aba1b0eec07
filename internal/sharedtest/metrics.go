package sharedtest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/dstune/dstune/internal/safetensors"
)

// Record is one line of a run's metrics.jsonl as README.md documents it:
// the step's own fields, DST's when the run uses it, and every field as
// decoded JSON (a method may add fields of its own).
type Record struct {
	Step         int64    `json:"step"`
	Epoch        int64    `json:"epoch"`
	Loss         *float64 `json:"loss"`
	LR           *float64 `json:"lr"`
	GradNorm     *float64 `json:"grad_norm"`
	StepMS       float64  `json:"step_ms"`
	ComputeMS    float64  `json:"compute_ms"`
	UpdateMS     float64  `json:"update_ms"`
	Tokens       int      `json:"tokens"`
	TokensPerSec float64  `json:"tokens_per_s"`
	MFU          float64  `json:"mfu"`
	ValidLoss    *float64 `json:"valid_loss"`

	// DST's fields (dst.StepMetrics).
	Eps             *float64              `json:"eps"`
	EpsAlg2         *float64              `json:"eps_alg2"`
	EpsPaperAlg2    *float64              `json:"eps_paper_alg2"`
	Churn           *float64              `json:"churn"`
	ExactFallbacks  *int                  `json:"exact_fallbacks"`
	ExactSelections *int                  `json:"exact_selections"`
	BandEntries     *int64                `json:"band_entries"`
	OptimizerMS     *float64              `json:"optimizer_ms"`
	DSTMS           *float64              `json:"dst_ms"`
	Q               *float64              `json:"q"`
	Silos           map[string]SiloRecord `json:"silos"`

	// Fields holds the line's every field.
	Fields map[string]any `json:"-"`
}

// SiloRecord is one silo's entry of a record's "silos".
type SiloRecord struct {
	Eps          float64  `json:"eps"`
	K            int64    `json:"k"`
	EpsAlg2      *float64 `json:"eps_alg2"`
	EpsPaperAlg2 *float64 `json:"eps_paper_alg2"`
	Q            *float64 `json:"q"`
	Churn        *float64 `json:"churn"`
}

// ReadMetrics reads RUN/metrics.jsonl, one record a line (the step-0
// validation record included), failing the test on a malformed line.
func ReadMetrics(t testing.TB, run string) []Record {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for line := range bytes.Lines(data) {
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("%s: metrics line %q: %v", run, line, err)
		}
		if err := json.Unmarshal(line, &r.Fields); err != nil {
			t.Fatalf("%s: metrics line %q: %v", run, line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// StepRecords are the records of training steps (step ≥ 1).
func StepRecords(recs []Record) []Record {
	var out []Record
	for _, r := range recs {
		if r.Step > 0 {
			out = append(out, r)
		}
	}
	return out
}

// CheckpointParams reads the parameters of RUN/checkpoint
// (params.safetensors) by name.
func CheckpointParams(t testing.TB, run string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.ReadFile(filepath.Join(run, "checkpoint", "params.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, x := range f.Tensors {
		out[x.Name] = Float32s(x.Data)
	}
	return out
}

// Float32s decodes little-endian float32 values.
func Float32s(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}
