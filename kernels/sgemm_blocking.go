package kernels

import "github.com/klauspost/cpuid/v2"

// gemmBlocking is the cache blocking of the outer loops: a packed kc×nr
// panel of B stays in L1 while the kernel sweeps the mc×kc block of A in
// L2; the kc×nc packed block of B lives in L3. kc counts inner indices.
type gemmBlocking struct {
	kc, mc, nc int
}

// cacheSizes are this CPU's per-core L1d and L2 and its L3 in bytes, from
// cpuid, with defaults where a VM reports nothing or nonsense.
var cacheSizes = func() (l1, l2, l3 int) {
	c := cpuid.CPU.Cache
	return saneCache(c.L1D, 16<<10, 4<<20, 32<<10),
		saneCache(c.L2, 128<<10, 64<<20, 1<<20),
		saneCache(c.L3, 1<<20, 4<<30, 8<<20)
}

func saneCache(got, lo, hi, fallback int) int {
	if got < lo || got > hi {
		return fallback
	}
	return got
}

// blockingFor sizes the blocks for an mr×nr micro-kernel whose elements
// are 4 bytes and hold kStep inner indices: the B panel (kc·nr elements)
// fills L1, A's block (mc rows of kc) about half of L2, B's block (kc·nc)
// a quarter of L3 (the rest is other cores' and other data's). kc is a
// multiple of 16 elements, the assembly packers' step. A panel as large
// as L1 looks too large, with A's rows streaming beside it, but the panel
// is read again for every tile of rows while each row of A is read once,
// so the panel's lines stay; a larger kc means fewer passes over C. On Zen
// 4 (32 KiB L1d, 1 MiB L2) the AVX-512 kernels get 256 elements (kc=256
// for float32, 512 for bfloat16) and mc=504: against two thirds of L1
// (kc=160, mc=812) that gained 2–5 points of the peak on the transformer
// shapes of `dstune profile gemm`, in float32 and bfloat16 (float32 kc
// from 224 to 320 measured within the noise of each other); the AVX2
// kernel's panels go from 336 to 512 elements, no slower. On Zen 5 (48
// KiB L1d) the panels are 384 elements; there kc from 192 to 384 measured
// within 3 % of each other.
func blockingFor(mr, nr, kStep int) gemmBlocking {
	l1, l2, l3 := cacheSizes()
	kp := max(16, l1/(4*nr)/16*16)
	mc := max(mr, l2/2/(4*kp)/mr*mr)
	nc := max(nr, l3/4/(4*kp)/nr*nr)
	return gemmBlocking{kc: kp * kStep, mc: mc, nc: nc}
}

// newGemmKernel fills in k's blocking for this machine.
func newGemmKernel[P packed](k *gemmKernel[P]) *gemmKernel[P] {
	k.block = blockingFor(k.mr, k.nr, k.kStep)
	return k
}

// sgemmGo is the portable micro-kernel, used by the generic ISA.
var sgemmGo = newGemmKernel(&gemmKernel[float32]{
	name: "go-4x4", mr: 4, nr: 4, kStep: 1, run: sgemmKernelGo,
	pack: &sgemmPacker{nr: 4},
})
