package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"

	"github.com/dstune/dstune/dst"
)

func init() {
	register(&command{
		name:     "overlap",
		synopsis: []string{"A.safetensors B.safetensors [--json]"},
		summary:  "subset overlap |A∩B|/|A| of two deltas (the paper's eq. 9), per tensor and in total",
		flags:    func(fs *flag.FlagSet) { new(overlapFlags).define(fs) },
		run:      runOverlap,
	})
}

// overlapJSON is one row of `dstune overlap --json`; Overlap is null when
// A changes nothing in the tensor.
type overlapJSON struct {
	Tensor  string   `json:"tensor,omitempty"`
	InA     int64    `json:"in_a"`
	InB     int64    `json:"in_b"`
	Both    int64    `json:"both"`
	Overlap *float64 `json:"overlap"`
}

func toOverlapJSON(o dst.TensorOverlap) overlapJSON {
	j := overlapJSON{Tensor: o.Tensor, InA: o.InA, InB: o.InB, Both: o.Both}
	if f := o.Fraction(); !math.IsNaN(f) {
		j.Overlap = &f
	}
	return j
}

// overlapFlags are dstune overlap's flags.
type overlapFlags struct{ asJSON *bool }

func (f *overlapFlags) define(fs *flag.FlagSet) {
	f.asJSON = fs.Bool("json", false, "print one JSON object: a, b, same_base, tensors (tensor, in_a, in_b, both, overlap), total")
}

// readOverlapDelta reads a DST delta for overlap, saying so when the file
// is a LoRA adapter or a soft prompt instead (whose subsets are not
// chosen: they change every entry they cover).
func readOverlapDelta(path string) (*dst.Delta, error) {
	d, err := dst.ReadDelta(path)
	if err == nil {
		return d, nil
	}
	if a, _ := readAdapterFile(path); a != nil {
		what := "a LoRA adapter"
		if a.Prompt != nil {
			what = "a soft prompt"
		}
		return nil, usagef("%s is %s: overlap compares the subsets of DST deltas (--method dst); other methods change every entry they cover", path, what)
	}
	return nil, err
}

func runOverlap(args []string, stdout, stderr io.Writer) error {
	var f overlapFlags
	fs := newFlagSet("overlap", f.define)
	asJSON := f.asJSON
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("want two delta files, got %d arguments", len(pos))
	}
	a, err := readOverlapDelta(pos[0])
	if err != nil {
		return err
	}
	b, err := readOverlapDelta(pos[1])
	if err != nil {
		return err
	}
	rep, err := dst.SubsetOverlap(a, b)
	if err != nil {
		return fmt.Errorf("%s and %s: %w", pos[0], pos[1], err)
	}
	sameBase := a.Meta.BaseSHA256 != "" && a.Meta.BaseSHA256 == b.Meta.BaseSHA256
	if *asJSON {
		out := struct {
			A        string        `json:"a"`
			B        string        `json:"b"`
			SameBase bool          `json:"same_base"`
			Tensors  []overlapJSON `json:"tensors"`
			Total    overlapJSON   `json:"total"`
		}{A: pos[0], B: pos[1], SameBase: sameBase, Tensors: []overlapJSON{}, Total: toOverlapJSON(rep.Total)}
		for _, o := range rep.Tensors {
			out.Tensors = append(out.Tensors, toOverlapJSON(o))
		}
		enc := json.NewEncoder(stdout)
		return enc.Encode(out)
	}
	if !sameBase {
		fmt.Fprintf(stderr, "note: the deltas record different (or no) base models: %q and %q\n", a.Meta.BaseSHA256, b.Meta.BaseSHA256)
	}
	fmt.Fprintf(stdout, "A = %s (%s)\nB = %s (%s)\n", pos[0], describeDelta(a), pos[1], describeDelta(b))
	fmt.Fprintf(stdout, "%-32s %12s %12s %12s %9s\n", "tensor", "|A|", "|B|", "|A∩B|", "overlap")
	row := func(name string, o dst.TensorOverlap) {
		frac := "-"
		if f := o.Fraction(); !math.IsNaN(f) {
			frac = fmt.Sprintf("%.4f", f)
		}
		fmt.Fprintf(stdout, "%-32s %12s %12s %12s %9s\n", name, groupThousands(o.InA), groupThousands(o.InB), groupThousands(o.Both), frac)
	}
	for _, o := range rep.Tensors {
		row(o.Tensor, o)
	}
	row("total", rep.Total)
	return nil
}
