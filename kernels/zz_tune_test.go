package kernels

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func TestTuneShapes(t *testing.T) {
	if os.Getenv("TUNE") == "" {
		t.Skip()
	}
	threads := envInt("T", 1)
	if kc := envInt("KC", 0); kc > 0 {
		saved := *sgemmAVX512
		defer func() { *sgemmAVX512 = saved }()
		sgemmAVX512.block.kc = kc
		sgemmAVX512.block.mc = envInt("MC", sgemmAVX512.block.mc)
	}
	fmt.Println("blocking", sgemmKernelForISA().block)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	now := func() float64 {
		if os.Getenv("WALL") != "" {
			return float64(time.Now().UnixNano()) / 1e9
		}
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
		return float64(ts.Nano()) / 1e9
	}
	shapes := transformerShapes()
	type data struct{ a, b, c []float32 }
	ds := make([]data, len(shapes))
	for i, s := range shapes {
		ds[i] = data{make([]float32, s.m*s.k), make([]float32, s.k*s.n), make([]float32, s.m*s.n)}
		for j := range ds[i].a {
			ds[i].a[j] = float32(j%7) - 3
		}
		for j := range ds[i].b {
			ds[i].b[j] = float32(j%5) - 2
		}
	}
	res := make([][]float64, len(shapes))
	for rep := 0; rep < envInt("REPS", 5); rep++ {
		for i, s := range shapes {
			lda, ldb := s.k, s.n
			if s.transA {
				lda = s.m
			}
			if s.transB {
				ldb = s.k
			}
			d := ds[i]
			Sgemm(threads, s.transA, s.transB, s.m, s.n, s.k, 1, d.a, lda, d.b, ldb, 0, d.c, s.n)
			start := now()
			Sgemm(threads, s.transA, s.transB, s.m, s.n, s.k, 1, d.a, lda, d.b, ldb, 0, d.c, s.n)
			res[i] = append(res[i], 2*float64(s.m)*float64(s.n)*float64(s.k)/(now()-start)/1e9)
		}
	}
	for i, s := range shapes {
		r := res[i]
		slices.Sort(r)
		fmt.Printf("%4dx%4dx%4d %s  median %6.1f max %6.1f\n", s.m, s.n, s.k, s.trans(), r[len(r)/2], r[len(r)-1])
	}
}

func TestTuneDenormal(t *testing.T) {
	if os.Getenv("TUNE") == "" {
		t.Skip()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	now := func() float64 {
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
		return float64(ts.Nano()) / 1e9
	}
	const n = 512
	a0 := make([]float32, n*n)
	b0 := make([]float32, n*n)
	for i := range a0 {
		a0[i] = float32(i%7) - 3.1
		b0[i] = float32(i%5) - 2.1
	}
	sc := func(s []float32, f float32) []float32 {
		o := make([]float32, len(s))
		for i, v := range s {
			o[i] = v * f
		}
		return o
	}
	cases := []struct {
		name string
		a, b []float32
	}{{"normal", a0, b0}, {"den-in", sc(a0, 1e-39), b0}, {"den-prod", sc(a0, 1e-20), sc(b0, 1e-20)}}
	c := make([]float32, n*n)
	for _, isa := range SupportedISAs() {
		restore := SetMaxISA(isa)
		reps := 7
		if isa == Generic {
			reps = 3
		}
		for _, cs := range cases {
			var r []float64
			for range reps {
				s := now()
				Sgemm(1, false, false, n, n, n, 1, cs.a, n, cs.b, n, 0, c, n)
				r = append(r, 2*n*n*n/(now()-s)/1e9)
			}
			slices.Sort(r)
			fmt.Printf("%v %-9s median %.1f\n", isa, cs.name, r[len(r)/2])
		}
		restore()
	}
}
