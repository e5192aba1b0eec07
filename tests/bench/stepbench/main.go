// Command stepbench times dstune's full fine-tuning step (AdamW) on the
// benchmark models against PyTorch's, on the same machine in the same run:
//
//	go run ./tests/bench/stepbench [-models bert,gpt] [-threads 1,2] [-reps 3] [-torch auto|yes|no] [-breakdown]
//
// Every repetition runs, for each model and thread count, dstune's 3
// warm-up + 10 timed steps and then (when /usr/bin/python3 has torch)
// testdata/bench/time_torch.py with the same counts, so both see the same
// machine load. It prints the median step times, the ratio PyTorch/dstune
// (> 1: dstune is faster), dstune's losses against the README's PyTorch
// losses, and with -breakdown where dstune's step spends its time.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/dstune/dstune/tests/bench"
)

func main() {
	models := flag.String("models", "bert,gpt", "models to time")
	threadList := flag.String("threads", "1,2", "thread counts")
	reps := flag.Int("reps", 3, "repetitions of every run")
	torch := flag.String("torch", "auto", "run PyTorch side by side: auto (when /usr/bin/python3 has torch) | yes | no")
	breakdown := flag.Bool("breakdown", false, "profile dstune's step per op and category")
	flag.IntVar(&warmupSteps, "warmup", bench.WarmupSteps, "warm-up steps (losses are still checked)")
	flag.IntVar(&timedSteps, "timed", bench.TimedSteps, "timed steps")
	flag.Parse()
	if warmupSteps < 0 || timedSteps < 1 || warmupSteps+timedSteps > len(bench.TorchLosses["gpt"]) {
		fmt.Fprintf(os.Stderr, "stepbench: want -warmup ≥ 0, -timed ≥ 1 and at most %d steps in all\n", len(bench.TorchLosses["gpt"]))
		os.Exit(2)
	}
	if err := run(strings.Split(*models, ","), *threadList, *reps, *torch, *breakdown); err != nil {
		fmt.Fprintln(os.Stderr, "stepbench:", err)
		os.Exit(1)
	}
}

var warmupSteps, timedSteps int

type key struct {
	model   string
	threads int
}

func run(models []string, threadList string, reps int, torchMode string, breakdown bool) error {
	dir, err := bench.Dir()
	if err != nil {
		return err
	}
	var threads []int
	for _, s := range strings.Split(threadList, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("bad thread count %q", s)
		}
		threads = append(threads, n)
	}
	useTorch := torchMode == "yes"
	if torchMode == "auto" {
		useTorch = exec.Command("/usr/bin/python3", "-c", "import torch").Run() == nil
	}
	goTimes, torchTimes := map[key][]time.Duration{}, map[key][]time.Duration{}
	lossDiff := map[key]float64{}
	updates := map[key][]time.Duration{}
	for rep := range reps {
		for _, m := range models {
			for _, n := range threads {
				k := key{m, n}
				step, err := bench.NewStep(dir, m, n)
				if err != nil {
					return err
				}
				for i := range warmupSteps + timedSteps {
					st, d, err := step.Next()
					if err != nil {
						step.Close()
						return err
					}
					lossDiff[k] = max(lossDiff[k], math.Abs(st.Loss-bench.TorchLosses[m][i]))
					if i >= warmupSteps {
						goTimes[k] = append(goTimes[k], d)
						updates[k] = append(updates[k], st.Update)
					}
				}
				if breakdown && rep == reps-1 {
					printBreakdown(step, n, updates[k])
				}
				step.Close()
				fmt.Printf("rep %d %s %d thread(s): dstune median %.1f ms\n", rep+1, m, n, ms(bench.Median(goTimes[k][len(goTimes[k])-timedSteps:])))
				if useTorch {
					ts, err := torchRun(dir, m, n)
					if err != nil {
						return err
					}
					torchTimes[k] = append(torchTimes[k], ts...)
					fmt.Printf("rep %d %s %d thread(s): PyTorch median %.1f ms\n", rep+1, m, n, ms(bench.Median(ts)))
				}
			}
		}
	}
	fmt.Printf("\n%-5s %7s %12s %12s %8s %14s\n", "model", "threads", "dstune ms", "PyTorch ms", "ratio", "max |Δloss|")
	for _, m := range models {
		for _, n := range threads {
			k := key{m, n}
			g := ms(bench.Median(goTimes[k]))
			src := "measured"
			t := ms(bench.Median(torchTimes[k]))
			if !useTorch {
				t, src = bench.TorchMedianMS[m][n], "README"
			}
			fmt.Printf("%-5s %7d %12.1f %9.1f %-3s %7.2fx %14.2g\n", m, n, g, t, src[:3], t/g, lossDiff[k])
		}
	}
	fmt.Printf("(medians over %d×%d timed steps each; ratio = PyTorch / dstune, > 1 means dstune is faster)\n", reps, timedSteps)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// torchRun runs time_torch.py and returns its timed step times.
func torchRun(dir, model string, threads int) ([]time.Duration, error) {
	cmd := exec.Command("/usr/bin/python3", "time_torch.py", model, strconv.Itoa(threads))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), fmt.Sprintf("OPENBLAS_NUM_THREADS=%d", threads), fmt.Sprintf("OMP_NUM_THREADS=%d", threads),
		fmt.Sprintf("WARMUP=%d", warmupSteps), fmt.Sprintf("STEPS=%d", timedSteps))
	if threads > 1 {
		cmd.Env = append(cmd.Env, "OMP_WAIT_POLICY=PASSIVE")
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("time_torch.py %s %d: %v\n%s", model, threads, err, errb.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "# step ms: "); ok {
			var ts []time.Duration
			for _, f := range strings.Fields(rest) {
				v, err := strconv.ParseFloat(f, 64)
				if err != nil {
					return nil, fmt.Errorf("time_torch.py: %q", sc.Text())
				}
				ts = append(ts, time.Duration(v*float64(time.Millisecond)))
			}
			return ts, nil
		}
	}
	return nil, fmt.Errorf("time_torch.py %s %d printed no step times:\n%s", model, threads, out.String())
}

func printBreakdown(step *bench.Step, threads int, updates []time.Duration) {
	ops, cats, err := step.Breakdown(5, updates)
	if err != nil {
		fmt.Println("breakdown:", err)
		return
	}
	var total time.Duration
	for _, d := range cats {
		total += d
	}
	fmt.Printf("\n%s, %d thread(s): where a step goes (median of 5 profiled runs; optimizer from the timed steps)\n", step.Model, threads)
	for _, c := range []bench.Category{bench.CatGEMM, bench.CatElem, bench.CatNorm, bench.CatMovement, bench.CatOpt} {
		fmt.Printf("  %-28s %8.1f ms %5.1f%%\n", c, ms(cats[c]), 100*float64(cats[c])/float64(total))
	}
	fmt.Printf("  %-28s %8.1f ms\n  top ops:\n", "total", ms(total))
	for i, o := range ops {
		if i == 15 {
			break
		}
		fmt.Printf("    %-36s %4d calls %8.1f ms  (%s)\n", o.Op, o.Calls, ms(o.Time), bench.CategoryOf(o.Op))
	}
	fmt.Println()
}
