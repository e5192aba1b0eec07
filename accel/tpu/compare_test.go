package tpu

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/dstune/dstune/internal/sharedtest"
)

// runComparison compares two runs of the same configuration on two
// backends, step by step: training losses, and per silo the subset size
// (k) and realized ε.
type runComparison struct {
	steps                int
	worstLossRel         float64
	worstValidRel        float64 // over the validation losses both report
	validations          int
	exactSelections      int // the second run's, summed over its steps
	siloSteps            int
	siloStepsOtherK      int // silo-steps whose k or realized ε differ
	medianMSa, medianMSb float64
	lines                []string
}

func compareRuns(t testing.TB, a, b string) (*runComparison, error) {
	ra, rb := sharedtest.ReadMetrics(t, a), sharedtest.ReadMetrics(t, b)
	if len(ra) != len(rb) || len(ra) == 0 {
		return nil, fmt.Errorf("%s has %d records, %s %d", a, len(ra), b, len(rb))
	}
	relDiff := func(a, b float64) float64 {
		rel := math.Abs(a-b) / max(math.Abs(a), 1e-30)
		if math.IsNaN(rel) {
			return math.Inf(1)
		}
		return rel
	}
	c := &runComparison{}
	var msA, msB []float64
	for i := range ra {
		x, y := ra[i], rb[i]
		if x.Step != y.Step || (x.Loss == nil) != (y.Loss == nil) || (x.ValidLoss == nil) != (y.ValidLoss == nil) {
			return nil, fmt.Errorf("record %d: step %d and %d, with other fields", i, x.Step, y.Step)
		}
		if x.ValidLoss != nil {
			c.validations++
			c.worstValidRel = max(c.worstValidRel, relDiff(*x.ValidLoss, *y.ValidLoss))
		}
		if x.Loss == nil {
			continue
		}
		c.steps++
		if y.ExactSelections != nil {
			c.exactSelections += *y.ExactSelections
		}
		rel := relDiff(*x.Loss, *y.Loss)
		c.worstLossRel = max(c.worstLossRel, rel)
		other := 0
		for name, s := range x.Silos {
			c.siloSteps++
			t, ok := y.Silos[name]
			if !ok || t.K != s.K || t.Eps != s.Eps {
				other++
			}
		}
		if len(x.Silos) != len(y.Silos) {
			other += max(len(x.Silos), len(y.Silos)) - min(len(x.Silos), len(y.Silos))
		}
		c.siloStepsOtherK += other
		msA, msB = append(msA, x.StepMS), append(msB, y.StepMS)
		c.lines = append(c.lines, fmt.Sprintf("step %3d loss %.7f %.7f rel %.1e silos with other k %d", x.Step, *x.Loss, *y.Loss, rel, other))
	}
	c.medianMSa, c.medianMSb = median(msA), median(msB)
	return c, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestDeviceCompareRuns compares two run directories given as
// $DSTUNE_COMPARE_RUNS="CPU_RUN,PJRT_RUN" (tests/device/run_pjrt.sh sets
// it after dstune train on both backends): losses within 1e-3 relative,
// identical subset sizes per silo and step.
func TestDeviceCompareRuns(t *testing.T) {
	dirs := strings.Split(os.Getenv("DSTUNE_COMPARE_RUNS"), ",")
	if len(dirs) != 2 {
		t.Skip("set DSTUNE_COMPARE_RUNS=CPU_RUN,PJRT_RUN to compare two runs")
	}
	c, err := compareRuns(t, dirs[0], dirs[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range c.lines {
		fmt.Printf("TABLE cli %s\n", l)
	}
	fmt.Printf("TABLE cli %d steps: worst loss rel diff %.2g; silo-steps with another k or ε %d of %d; exact selections on the device %d; median step %.2f ms (cpu) %.2f ms (pjrt)\n",
		c.steps, c.worstLossRel, c.siloStepsOtherK, c.siloSteps, c.exactSelections, c.medianMSa, c.medianMSb)
	if c.validations > 0 {
		fmt.Printf("TABLE cli %d validations: worst loss rel diff %.2g\n", c.validations, c.worstValidRel)
	}
	if c.worstLossRel > 1e-3 || c.worstValidRel > 1e-3 {
		t.Errorf("losses differ by up to %.2g relative (> 1e-3)", c.worstLossRel)
	}
	if c.siloStepsOtherK > 0 {
		t.Errorf("%d silo-steps kept another number of entries", c.siloStepsOtherK)
	}
}
