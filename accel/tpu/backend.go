package tpu

import (
	"fmt"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/ir"
)

func init() {
	accel.Register("pjrt", func() (accel.Backend, error) { return Open(Options{}) })
}

// Options configure Open.
type Options struct {
	// PluginPath is the plugin file (--pjrt-plugin); "" searches as
	// FindPlugin does.
	PluginPath string
}

// StepResult is what one training step returns to the host.
type StepResult struct {
	Loss  float32
	Silos []SiloStep // one per DST silo, in DST.Silos order (nil without DST)
}

// SiloStep is one silo's DST outcome for a step.
type SiloStep struct {
	Size      int64   // entries in the silo
	Kept      int64   // entries kept free (differing from the seed)
	Changed   int64   // kept entries that were not kept the step before
	Threshold float32 // the threshold q used
	Exact     bool    // q came from an exact selection this step
}

// RealizedEps is Kept/Size.
func (s SiloStep) RealizedEps() float64 {
	if s.Size == 0 {
		return 0
	}
	return float64(s.Kept) / float64(s.Size)
}

// Churn is the share of the subset that changed since the previous step.
func (s SiloStep) Churn() float64 {
	if s.Kept == 0 {
		return 0
	}
	return float64(s.Changed) / float64(s.Kept)
}

// stepInputsFor checks a step's inputs against a program.
func checkInputs(p *Program, inputs []*ir.Tensor) error {
	n := 0
	for _, a := range p.Args {
		if a.Kind != ArgInput {
			continue
		}
		if n >= len(inputs) {
			return fmt.Errorf("tpu: %d inputs given, the program takes more", len(inputs))
		}
		t := inputs[n]
		if t == nil || t.DType() != a.Type.DType || !t.Shape().Equal(a.Type.Shape) {
			got := "nil"
			if t != nil {
				got = fmt.Sprintf("%s%v", t.DType(), t.Shape())
			}
			return fmt.Errorf("tpu: input %q is %s, want %v", a.Name, got, a.Type)
		}
		n++
	}
	if n != len(inputs) {
		return fmt.Errorf("tpu: %d inputs given, the program takes %d", len(inputs), n)
	}
	return nil
}

// residentKey names a device-resident argument: its kind and name.
type residentKey struct {
	kind ArgKind
	name string
}
