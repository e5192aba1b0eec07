// Command dstoverhead measures what DST adds to a fine-tuning step: on a
// benchmark model (testdata/bench), the same batches, AdamW as in
// stepbench, full fine-tuning and DST trained side by side, interleaved:
//
//	go run ./tests/bench/dstoverhead [-model gpt] [-threads 2] [-eps 1e-3] [-threshold iterative] [-rounds 6] [-steps 8]
//
// After 3 warm-up steps each, every round takes -steps steps with one
// method and then -steps with the other (the order alternates between
// rounds, so drift in the machine's load hits both alike); both walk the
// same batches. It prints the median step time of each, the overhead
// DST/full − 1, and DST's own cost measured inside the step: the median
// update time (optimizer + DST) of the DST steps minus that of the full
// steps, as a share of the full step — the figure the machine's noise
// disturbs least.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/dstune/dstune/dst"
	"github.com/dstune/dstune/tests/bench"
	"github.com/dstune/dstune/train"
)

func main() {
	model := flag.String("model", "gpt", "benchmark model: gpt or bert")
	threads := flag.Int("threads", 2, "goroutines per kernel")
	eps := flag.Float64("eps", 1e-3, "DST's ε")
	threshold := flag.String("threshold", dst.ThresholdIterative, "iterative | exact")
	silo := flag.String("silo", dst.SiloModuleLayer, "module-layer | module | none")
	rounds := flag.Int("rounds", 6, "interleaved rounds")
	steps := flag.Int("steps", 8, "steps per method and round")
	flag.Parse()
	if err := run(*model, *threads, *eps, *threshold, *silo, *rounds, *steps); err != nil {
		fmt.Fprintln(os.Stderr, "dstoverhead:", err)
		os.Exit(1)
	}
}

type timings struct{ step, update, compute []time.Duration }

func (t *timings) add(st train.StepStats, wall time.Duration) {
	t.step = append(t.step, wall)
	t.update = append(t.update, st.Update)
	t.compute = append(t.compute, st.Compute)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func run(model string, threads int, eps float64, threshold, silo string, rounds, steps int) error {
	dir, err := bench.Dir()
	if err != nil {
		return err
	}
	opts := dst.DefaultOptions()
	opts.Eps, opts.Threshold, opts.Silo = eps, threshold, silo
	method, err := dst.NewMethod(opts, nil, "")
	if err != nil {
		return err
	}
	full, err := bench.NewStep(dir, model, threads)
	if err != nil {
		return err
	}
	defer full.Close()
	dstStep, err := bench.NewStepWith(dir, model, threads, method)
	if err != nil {
		return err
	}
	defer dstStep.Close()
	for range bench.WarmupSteps {
		for _, s := range []*bench.Step{full, dstStep} {
			if _, _, err := s.Next(); err != nil {
				return err
			}
		}
	}
	var tf, td timings
	var fallbacks, band int64
	var dstMS, roundRatios []float64
	for r := range rounds {
		nf, nd := len(tf.step), len(td.step)
		order := []*bench.Step{full, dstStep}
		if r%2 == 1 {
			order[0], order[1] = dstStep, full
		}
		for _, s := range order {
			for range steps {
				st, wall, err := s.Next()
				if err != nil {
					return err
				}
				if s == full {
					tf.add(st, wall)
					continue
				}
				td.add(st, wall)
				m := method.Metrics(dstStep.Engine.Step(), dstStep.Engine.LastResult()).(*dst.StepMetrics)
				fallbacks += int64(m.ExactFallbacks)
				band += *m.BandEntries
				dstMS = append(dstMS, *m.DSTMS)
			}
		}
		roundRatios = append(roundRatios, float64(bench.Median(td.step[nd:]))/float64(bench.Median(tf.step[nf:])))
	}
	mf, md := bench.Median(tf.step), bench.Median(td.step)
	uf, ud := bench.Median(tf.update), bench.Median(td.update)
	fmt.Printf("%s, %d threads, DST ε=%g %s threshold, %s silos, AdamW; %d rounds × %d steps per method, interleaved\n",
		model, threads, eps, threshold, silo, rounds, steps)
	fmt.Printf("median step:   full %8.2f ms   dst %8.2f ms   overhead %+.2f%%\n", ms(mf), ms(md), 100*(float64(md)/float64(mf)-1))
	fmt.Printf("per round, median dst step / median full step − 1: %s; their median %+.2f%%\n", percents(roundRatios), 100*(medianOf(roundRatios)-1))
	fmt.Printf("quartiles of the step times: full %.1f–%.1f ms, dst %.1f–%.1f ms\n",
		ms(quantile(tf.step, 0.25)), ms(quantile(tf.step, 0.75)), ms(quantile(td.step, 0.25)), ms(quantile(td.step, 0.75)))
	fmt.Printf("median update: full %8.2f ms   dst %8.2f ms   DST's own cost %.2f ms = %.2f%% of the full step\n",
		ms(uf), ms(ud), ms(ud-uf), 100*float64(ud-uf)/float64(mf))
	fmt.Printf("median compute (forward+backward): full %.2f ms, dst %.2f ms\n", ms(bench.Median(tf.compute)), ms(bench.Median(td.compute)))
	var dm []time.Duration
	for _, x := range dstMS {
		dm = append(dm, time.Duration(x*1e6))
	}
	fmt.Printf("DST after the optimizer pass (selection, masked pass, fix-up): median %.3f ms; exact fallbacks %d, band entries %d in %d steps\n",
		ms(bench.Median(dm)), fallbacks, band, len(td.step))
	fmt.Printf("step times (ms), full: %v\n                   dst:  %v\n", msList(tf.step), msList(td.step))
	return nil
}

func msList(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d.Microseconds()/100) / 10
	}
	return out
}

func percents(ratios []float64) string {
	parts := make([]string, len(ratios))
	for i, r := range ratios {
		parts[i] = fmt.Sprintf("%+.1f%%", 100*(r-1))
	}
	return strings.Join(parts, " ")
}

func medianOf(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// quantile of durations by the nearest rank.
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
