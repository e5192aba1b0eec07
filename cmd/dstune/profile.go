package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/dstune/dstune/kernels"
)

// profileRecord is one line of `dstune profile --json` (README.md): ms is
// the median time of one call; for GEMM shape is MxNxK, for scans the
// element count; the peaks are measured on the spot.
type profileRecord struct {
	Kernel     string  `json:"kernel"`
	Shape      string  `json:"shape"`
	Trans      string  `json:"trans,omitempty"`
	Threads    int     `json:"threads"`
	ISA        string  `json:"isa"`
	MS         float64 `json:"ms"`
	GFLOPS     float64 `json:"gflops"`
	GBPS       float64 `json:"gbps"`
	PeakGFLOPS float64 `json:"peak_gflops"`
	PeakGBPS   float64 `json:"peak_gbps"`
	// VsFP32 is, for a reduced-precision kernel measured beside its
	// float32 counterpart (profile gemm --precision all), its GFLOP/s over
	// the float32 kernel's on the same shape.
	VsFP32 float64 `json:"vs_fp32,omitempty"`
}

// profileEnv is what every profiler gets: the thread count, the ISA, and the
// machine's peaks, each measured once on first use.
type profileEnv struct {
	threads int
	isa     kernels.ISA
	quick   bool // fewer repetitions and smaller sizes (tests)
	// precision selects the GEMM kernels: "fp32" (Sgemm), "bf16" (Sbgemm)
	// or "all" (both, side by side).
	precision string

	flopsOnce, bwOnce sync.Once
	flops, bw         float64
}

// peakMeasurers are set by the files that own the kernels measuring them
// (an FMA loop and a streaming read), so this file does not depend on any
// one kernel family.
var (
	measurePeakGFLOPS func(threads int) float64
	measurePeakReadGB func(threads int) float64
)

func (e *profileEnv) peakGFLOPS() float64 {
	e.flopsOnce.Do(func() {
		if measurePeakGFLOPS != nil {
			e.flops = measurePeakGFLOPS(e.threads)
		}
	})
	return e.flops
}

func (e *profileEnv) peakGBPS() float64 {
	e.bwOnce.Do(func() {
		if measurePeakReadGB != nil {
			e.bw = measurePeakReadGB(e.threads)
		}
	})
	return e.bw
}

// profiler measures one kernel family and returns its records.
type profiler struct {
	name string
	run  func(env *profileEnv) ([]profileRecord, error)
}

var profilers []profiler

func registerProfiler(p profiler) { profilers = append(profilers, p) }

func init() {
	register(&command{
		name:     "profile",
		synopsis: []string{"[KERNEL|all] [--threads 1] [--isa avx512|avx2|generic] [--precision fp32|bf16|all] [--json] [--quick]"},
		summary:  "measure kernel throughput against this machine's measured peaks",
		flags:    func(fs *flag.FlagSet) { new(profileFlags).define(fs) },
		run:      runProfile,
	})
}

// profileFlags are dstune profile's flags.
type profileFlags struct {
	threads            *int
	isaName, precision *string
	asJSON, quick      *bool
}

func (f *profileFlags) define(fs *flag.FlagSet) {
	f.threads = fs.Int("threads", 1, "goroutines per kernel call")
	f.isaName = fs.String("isa", kernels.HardwareISA().String(), "cap dispatch at this ISA")
	f.asJSON = fs.Bool("json", false, "print one JSON object a line")
	f.quick = fs.Bool("quick", false, "small sizes and few repetitions (a smoke test, not a measurement)")
	f.precision = fs.String("precision", "fp32", "GEMM operand precision: fp32, bf16 (float32 accumulation) or all")
}

func runProfile(args []string, stdout, stderr io.Writer) error {
	var f profileFlags
	fs := newFlagSet("profile", f.define)
	threads, isaName, asJSON, quick, precision := f.threads, f.isaName, f.asJSON, f.quick, f.precision
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	names := make([]string, len(profilers))
	for i, p := range profilers {
		names[i] = p.name
	}
	want := "all"
	switch len(pos) {
	case 0:
	case 1:
		want = pos[0]
	default:
		return usagef("at most one kernel name, got %q", pos)
	}
	if want != "all" && !slices.Contains(names, want) {
		return usagef("unknown kernel %q (have %s, all)", want, strings.Join(names, ", "))
	}
	if *threads < 1 {
		return usagef("--threads must be at least 1")
	}
	switch *precision {
	case "fp32", "bf16", "all":
	default:
		return usagef("--precision must be fp32, bf16 or all, got %q", *precision)
	}
	isa, err := kernels.ParseISA(*isaName)
	if err != nil {
		return usagef("%v", err)
	}
	defer kernels.SetMaxISA(isa)()
	env := &profileEnv{threads: *threads, isa: kernels.ActiveISA(), quick: *quick, precision: *precision}
	for _, p := range profilers {
		if want != "all" && p.name != want {
			continue
		}
		recs, err := p.run(env)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		for _, r := range recs {
			if *asJSON {
				line, _ := json.Marshal(r)
				fmt.Fprintln(stdout, string(line))
				continue
			}
			fmt.Fprintln(stdout, formatRecord(r))
		}
	}
	return nil
}

func formatRecord(r profileRecord) string {
	// The widest kernel name is masked-update-indices'.
	s := fmt.Sprintf("%-21s %-16s %-3s %dT %-7s %9.3f ms", r.Kernel, r.Shape, r.Trans, r.Threads, r.ISA, r.MS)
	if r.GFLOPS > 0 {
		s += fmt.Sprintf("  %7.1f GFLOP/s", r.GFLOPS)
		if r.PeakGFLOPS > 0 {
			s += fmt.Sprintf(" (%3.0f%% of %.0f peak)", 100*r.GFLOPS/r.PeakGFLOPS, r.PeakGFLOPS)
		}
	}
	if r.GBPS > 0 {
		s += fmt.Sprintf("  %6.1f GB/s", r.GBPS)
		if r.PeakGBPS > 0 {
			s += fmt.Sprintf(" (%3.0f%% of %.1f read peak)", 100*r.GBPS/r.PeakGBPS, r.PeakGBPS)
		}
	}
	if r.VsFP32 > 0 {
		s += fmt.Sprintf("  %.2f× fp32", r.VsFP32)
	}
	return s
}
