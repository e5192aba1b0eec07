// Command stepbench times dstune's full fine-tuning step (AdamW) on the
// benchmark models against PyTorch's, on the same machine in the same run:
//
//	go run ./tests/bench/stepbench [-models bert,gpt] [-threads 1,2] [-precision fp32,bf16] [-reps 3] [-torch auto|yes|no]
//		[-torch-precision fp32,bf16] [-breakdown]
//
// Every repetition runs, for each model, thread count and precision,
// dstune's 3 warm-up + 10 timed steps and then (when /usr/bin/python3 has
// torch) tests/bench/torch_step.py with the same counts — float32, or
// bfloat16 autocast around the forward pass and the loss —, so both see
// the same machine load. It prints the median step times (wall clock and
// process CPU time: on a loaded machine the wall clock of both sides
// stretches with other work, while CPU time counts only the process's
// own), the ratios PyTorch/dstune (> 1: dstune is faster), dstune's model
// FLOPs utilization, dstune's losses against PyTorch's, and with
// -breakdown where dstune's step spends its time.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dstune/dstune/accel"
	"github.com/dstune/dstune/accel/cpu"
	"github.com/dstune/dstune/tests/bench"
	"github.com/dstune/dstune/train"
)

func main() {
	models := flag.String("models", "bert,gpt", "models to time")
	threadList := flag.String("threads", "1,2", "thread counts")
	precisionList := flag.String("precision", "fp32,bf16", "precisions of the products: fp32, bf16 (PyTorch: bfloat16 autocast)")
	reps := flag.Int("reps", 3, "repetitions of every run")
	torch := flag.String("torch", "auto", "run PyTorch side by side: auto (when /usr/bin/python3 has torch) | yes | no")
	torchPrecisions := flag.String("torch-precision", "fp32,bf16", "the precisions PyTorch runs in (of -precision's)")
	breakdown := flag.Bool("breakdown", false, "profile dstune's step per op and category")
	flag.IntVar(&warmupSteps, "warmup", bench.WarmupSteps, "warm-up steps (losses are still checked)")
	flag.IntVar(&timedSteps, "timed", bench.TimedSteps, "timed steps")
	flag.Parse()
	if warmupSteps < 0 || timedSteps < 1 || warmupSteps+timedSteps > len(bench.TorchLosses["gpt"]) {
		fmt.Fprintf(os.Stderr, "stepbench: want -warmup ≥ 0, -timed ≥ 1 and at most %d steps in all\n", len(bench.TorchLosses["gpt"]))
		os.Exit(2)
	}
	if err := run(strings.Split(*models, ","), *threadList, *precisionList, *reps, *torch, strings.Split(*torchPrecisions, ","), *breakdown); err != nil {
		fmt.Fprintln(os.Stderr, "stepbench:", err)
		os.Exit(1)
	}
}

var warmupSteps, timedSteps int

type key struct {
	model     string
	threads   int
	precision accel.Precision
}

// times are the timed steps of one side.
type times struct {
	wall, cpu []time.Duration
	losses    map[int]float64 // by step index (warm-up included), of the last repetition
}

func (t *times) add(wall, cpu time.Duration) {
	t.wall = append(t.wall, wall)
	t.cpu = append(t.cpu, cpu)
}

func run(models []string, threadList, precisionList string, reps int, torchMode string, torchPrecisions []string, breakdown bool) error {
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
	var precisions []accel.Precision
	for _, s := range strings.Split(precisionList, ",") {
		p, err := accel.ParsePrecision(s)
		if err != nil {
			return err
		}
		precisions = append(precisions, p)
	}
	useTorch := torchMode == "yes"
	if torchMode == "auto" {
		useTorch = exec.Command("/usr/bin/python3", "-c", "import torch").Run() == nil
	}
	script, err := torchScript()
	if err != nil && useTorch {
		return err
	}
	if useTorch {
		warnReferenceBLAS()
	}
	goTimes, torchTimes := map[key]*times{}, map[key]*times{}
	updates := map[key][]time.Duration{}
	mfuFLOPs := map[key]float64{}
	for rep := range reps {
		for _, m := range models {
			for _, n := range threads {
				for _, p := range precisions {
					k := key{m, n, p}
					if goTimes[k] == nil {
						goTimes[k], torchTimes[k] = &times{}, &times{}
					}
					gt := goTimes[k]
					step, err := bench.NewStepOpts(dir, m, accel.Options{Threads: n, Precision: p}, train.FullMethod{})
					if err != nil {
						return err
					}
					gt.losses = map[int]float64{}
					for i := range warmupSteps + timedSteps {
						cpu0 := processCPU()
						st, d, err := step.Next()
						cpuTime := processCPU() - cpu0
						if err != nil {
							step.Close()
							return err
						}
						gt.losses[i] = st.Loss
						if i >= warmupSteps {
							gt.add(d, cpuTime)
							updates[k] = append(updates[k], st.Update)
						}
					}
					if mfuFLOPs[k] == 0 {
						b := step.Batches[0]
						g, err := step.Engine.TrainingGraph(train.BatchShape{B: b.B, T: b.T})
						if err != nil {
							return err
						}
						mfuFLOPs[k] = train.GraphProductFLOPs(g)
					}
					if breakdown && rep == reps-1 {
						printBreakdown(step, k, updates[k])
					}
					step.Close()
					runtime.GC()
					fmt.Printf("rep %d %s %d thread(s) %s: dstune median %.1f ms (CPU %.1f ms)\n", rep+1, m, n, p,
						ms(bench.Median(gt.wall[len(gt.wall)-timedSteps:])), ms(bench.Median(gt.cpu[len(gt.cpu)-timedSteps:])))
					if useTorch && slices.Contains(torchPrecisions, string(p)) {
						tt := torchTimes[k]
						if err := torchRun(script, dir, k, tt); err != nil {
							return err
						}
						fmt.Printf("rep %d %s %d thread(s) %s: PyTorch median %.1f ms (CPU %.1f ms)\n", rep+1, m, n, p,
							ms(bench.Median(tt.wall[len(tt.wall)-timedSteps:])), ms(bench.Median(tt.cpu[len(tt.cpu)-timedSteps:])))
					}
				}
			}
		}
	}
	fmt.Printf("\n%-5s %3s %5s %11s %11s %7s %11s %11s %7s %6s %6s %11s\n", "model", "thr", "prec",
		"dstune ms", "PyTorch ms", "ratio", "dstune CPU", "PyTorch CPU", "ratio", "MFU", "MFUcpu", "max |Δloss|")
	backend := cpu.New()
	for _, m := range models {
		for _, n := range threads {
			for _, p := range precisions {
				k := key{m, n, p}
				g, gc := ms(bench.Median(goTimes[k].wall)), ms(bench.Median(goTimes[k].cpu))
				t, tc := math.NaN(), math.NaN()
				ref := bench.TorchLosses[m][:warmupSteps+timedSteps] // the steps run
				if useTorch && slices.Contains(torchPrecisions, string(p)) {
					t, tc = ms(bench.Median(torchTimes[k].wall)), ms(bench.Median(torchTimes[k].cpu))
					ref = nil
					for i := range warmupSteps + timedSteps {
						ref = append(ref, torchTimes[k].losses[i])
					}
				} else if !useTorch && p == accel.PrecisionFP32 {
					t = bench.TorchMedianMS[m][n]
				}
				lossDiff := 0.0
				for i, l := range ref {
					lossDiff = max(lossDiff, math.Abs(goTimes[k].losses[i]-l))
				}
				peak := backend.PeakGFLOPS(accel.Options{Threads: n, Precision: p})
				mfu := mfuFLOPs[k] / (g / 1e3) / 1e9 / peak
				mfuCPU := mfuFLOPs[k] / (gc / 1e3 / float64(n)) / 1e9 / peak
				fmt.Printf("%-5s %3d %5s %11.1f %11.1f %6.2fx %11.1f %11.1f %6.2fx %5.0f%% %5.0f%% %11.2g\n", m, n, p,
					g, t, t/g, gc, tc, tc/gc, 100*mfu, 100*mfuCPU, lossDiff)
			}
		}
	}
	fmt.Printf("(medians over %d×%d timed steps each; ratio = PyTorch / dstune, > 1 means dstune is faster; CPU = process CPU time a step;\n", reps, timedSteps)
	fmt.Printf(" MFU = the step's matrix-product FLOPs over its wall time (MFUcpu: CPU time / threads) as a share of the peak of the precision, measured now;\n")
	fmt.Printf(" Δloss against PyTorch's losses of the same precision%s)\n", map[bool]string{true: ", measured in this run", false: " (the README's, fp32)"}[useTorch])
	if !useTorch {
		fmt.Println("PyTorch was not run: its times are the README's (fp32) or NaN")
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// processCPU is the CPU time this process has used (all threads).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// torchScript finds torch_step.py next to this command's package.
func torchScript() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "tests", "bench", "torch_step.py")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no tests/bench/torch_step.py above %s: run stepbench from the repository", wd)
		}
	}
}

// torchRun runs torch_step.py for k and adds its timed steps to t.
func torchRun(script, dir string, k key, t *times) error {
	cmd := exec.Command("/usr/bin/python3", script, dir, k.model, strconv.Itoa(k.threads), string(k.precision))
	cmd.Env = append(os.Environ(), fmt.Sprintf("OPENBLAS_NUM_THREADS=%d", k.threads), fmt.Sprintf("OMP_NUM_THREADS=%d", k.threads),
		fmt.Sprintf("WARMUP=%d", warmupSteps), fmt.Sprintf("STEPS=%d", timedSteps), "PYTHONDONTWRITEBYTECODE=1")
	if k.threads > 1 {
		cmd.Env = append(cmd.Env, "OMP_WAIT_POLICY=PASSIVE")
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("torch_step.py %s %d %s: %v\n%s", k.model, k.threads, k.precision, err, errb.String())
	}
	fields := map[string][]float64{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		for _, name := range []string{"wall ms", "cpu ms", "losses"} {
			if rest, ok := strings.CutPrefix(sc.Text(), "# "+name+": "); ok {
				for _, f := range strings.Fields(rest) {
					v, err := strconv.ParseFloat(f, 64)
					if err != nil {
						return fmt.Errorf("torch_step.py: %q", sc.Text())
					}
					fields[name] = append(fields[name], v)
				}
			}
		}
	}
	wall, cpuMS, losses := fields["wall ms"], fields["cpu ms"], fields["losses"]
	if len(wall) != timedSteps || len(cpuMS) != timedSteps || len(losses) != warmupSteps+timedSteps {
		return fmt.Errorf("torch_step.py %s %d %s printed %d/%d step times and %d losses:\n%s", k.model, k.threads, k.precision, len(wall), len(cpuMS), len(losses), out.String())
	}
	for i := range wall {
		t.add(time.Duration(wall[i]*float64(time.Millisecond)), time.Duration(cpuMS[i]*float64(time.Millisecond)))
	}
	t.losses = map[int]float64{}
	for i, l := range losses {
		t.losses[i] = l
	}
	return nil
}

func printBreakdown(step *bench.Step, k key, updates []time.Duration) {
	ops, cats, err := step.Breakdown(5, updates)
	if err != nil {
		fmt.Println("breakdown:", err)
		return
	}
	var total time.Duration
	for _, d := range cats {
		total += d
	}
	fmt.Printf("\n%s, %d thread(s), %s: where a step goes (median of 5 profiled runs; optimizer from the timed steps)\n", step.Model, k.threads, k.precision)
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

// warnReferenceBLAS says so when Debian's PyTorch would load the
// reference BLAS (libblas3, unoptimized loops), whose float32 products
// run tens of times slower than OpenBLAS's: a comparison against it says
// nothing.
func warnReferenceBLAS() {
	lib, err := filepath.EvalSymlinks("/usr/lib/x86_64-linux-gnu/libblas.so.3")
	if err == nil && strings.Contains(lib, "/blas/") {
		fmt.Fprintf(os.Stderr, "stepbench: warning: PyTorch's BLAS is the reference one (%s); install OpenBLAS for a fair comparison: apt-get install libopenblas0-pthread\n", lib)
	}
}
