package kernels

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestOrderedKey(t *testing.T) {
	vals := []float32{float32(math.Inf(-1)), -math.MaxFloat32, -1, -1e-40, -math.SmallestNonzeroFloat32,
		0, math.SmallestNonzeroFloat32, 1e-40, 1, math.MaxFloat32, float32(math.Inf(1))}
	for i := range vals {
		for j := range vals {
			a, b := vals[i], vals[j]
			if (orderedKey(a) > orderedKey(b)) != (a > b) || (orderedKey(a) == orderedKey(b)) != (a == b) {
				t.Errorf("key order of %v, %v disagrees with float order", a, b)
			}
		}
		if !sameBits(keyValue(orderedKey(vals[i])), vals[i]) {
			t.Errorf("keyValue(orderedKey(%v)) = %v", vals[i], keyValue(orderedKey(vals[i])))
		}
	}
	if orderedKey(float32(math.Copysign(0, -1))) != orderedKey(0) {
		t.Error("-0 and +0 have different keys")
	}
	for _, nan := range []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0xffffffff} {
		if k := orderedKey(math.Float32frombits(nan)); k != 0 {
			t.Errorf("key(NaN %#x) = %#x, want 0", nan, k)
		}
	}
	if orderedKey(float32(math.Inf(-1))) == 0 {
		t.Error("-Inf shares NaN's key")
	}
}

type ranked struct {
	s   float32
	pos int64
}

// refSelection returns, by sorting, which silo positions the exact tie
// rule keeps for the top k: scores descending (NaN last, never kept),
// ties by ascending position.
func refSelection(pieces []SiloPiece, d Distance, k int64) map[int64]bool {
	var all []ranked
	var pos int64
	for _, p := range pieces {
		for i := range p.Theta {
			s := p.Theta[i]
			if p.Seed != nil {
				s = refScore(p.Theta[i], p.Seed[i], d)
			}
			if s == s {
				all = append(all, ranked{s, pos})
			}
			pos++
		}
	}
	slices.SortFunc(all, func(a, b ranked) int {
		if a.s != b.s {
			return cmp.Compare(b.s, a.s)
		}
		return cmp.Compare(a.pos, b.pos)
	})
	keep := map[int64]bool{}
	for i := range min(int(max(k, 0)), len(all)) {
		keep[all[i].pos] = true
	}
	return keep
}

// checkSelection verifies that th keeps exactly the reference set.
func checkSelection(t *testing.T, what string, pieces []SiloPiece, d Distance, k int64, th Threshold, kept int64) {
	t.Helper()
	want := refSelection(pieces, d, k)
	if kept != int64(len(want)) {
		t.Fatalf("%s: TopK(%d) reports %d kept, want %d", what, k, kept, len(want))
	}
	var pos int64
	for _, p := range pieces {
		for i := range p.Theta {
			s := p.Theta[i]
			if p.Seed != nil {
				s = refScore(p.Theta[i], p.Seed[i], d)
			}
			if th.Keep(s, pos) != want[pos] {
				t.Fatalf("%s: k=%d %+v: position %d (score %v) kept=%v, want %v", what, k, th, pos, s, th.Keep(s, pos), want[pos])
			}
			pos++
		}
	}
}

func splitPieces(rng *rand.Rand, theta, seed []float32, parts int) []SiloPiece {
	var pieces []SiloPiece
	for len(theta) > 0 || len(pieces) == 0 {
		n := len(theta)
		if parts > 1 {
			n = rng.IntN(len(theta) + 1)
		}
		parts--
		var s []float32
		if seed != nil {
			s = seed[:n]
			seed = seed[n:]
		}
		pieces = append(pieces, SiloPiece{Theta: theta[:n], Seed: s})
		theta = theta[n:]
	}
	return pieces
}

func TestTopKSmall(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	var sel Selector
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, kind := range dataKinds {
			for _, n := range sizes(t) {
				if n > 5000 {
					continue
				}
				theta, seed := makeData(rng, n, kind)
				d := allDistances[rng.IntN(3)]
				pieces := splitPieces(rng, theta, seed, 1+rng.IntN(3))
				for _, k := range []int64{0, 1, int64(n / 3), int64(n), int64(n + 5), int64(rng.IntN(n + 1))} {
					th, kept := sel.TopK(k, d, pieces, 1)
					checkSelection(t, kind.String(), pieces, d, k, th, kept)
				}
				xs := [][]float32{theta}
				th, kept := sel.TopKFloats(int64(n/2), xs, 1)
				checkSelection(t, kind.String()+" floats", []SiloPiece{{Theta: theta}}, 0, int64(n/2), th, kept)
			}
		}
	})
}

// TestTopKLarge crosses every path of the radix selection: a histogram
// then a collection (normal data), two histograms (uniform data: a quarter
// of all keys share the top digit), three histograms and a tie scan (ties),
// with several pieces and thread counts, and results equal across ISAs.
func TestTopKLarge(t *testing.T) {
	n := 300_000
	if testing.Short() {
		n = 140_000
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var sel Selector
	for _, kind := range dataKinds {
		theta, seed := makeData(rng, n, kind)
		pieces := splitPieces(rng, theta, seed, 3)
		d := DistanceAbs
		if kind == dataSpecial {
			d = DistanceRel
		}
		ks := []int64{30, int64(n / 10), int64(n / 2)}
		results := map[int64]Threshold{}
		forISAs(t, func(t *testing.T, isa ISA) {
			for _, k := range ks {
				for _, threads := range []int{1, 2, 3} {
					th, kept := sel.TopK(k, d, pieces, threads)
					if prev, ok := results[k]; ok {
						if prev != th {
							t.Fatalf("%v k=%d threads=%d: %+v, another run gave %+v", kind, k, threads, th, prev)
						}
						continue
					}
					results[k] = th
					checkSelection(t, kind.String(), pieces, d, k, th, kept)
				}
			}
		})
	}
}

func TestTopKAllNaN(t *testing.T) {
	nan := float32(math.NaN())
	x := []float32{nan, 1, nan, 2, nan}
	var sel Selector
	forISAs(t, func(t *testing.T, isa ISA) {
		th, kept := sel.TopKFloats(4, [][]float32{x}, 1)
		if kept != 2 {
			t.Fatalf("kept %d of 2 numbers", kept)
		}
		checkSelection(t, "nan", []SiloPiece{{Theta: x}}, 0, 4, th, kept)
	})
}

func TestTopKDoesNotAllocate(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	theta, seed := makeData(rng, 200_000, dataNormal)
	pieces := []SiloPiece{{theta, seed}}
	var sel Selector
	sel.TopK(20, DistanceAbs, pieces, 2) // warm up the buffers
	allocs := testing.AllocsPerRun(3, func() { sel.TopK(20, DistanceAbs, pieces, 2) })
	if allocs > 0 {
		t.Errorf("TopK allocates %v times per call after the first", allocs)
	}
}

func FuzzTopK(f *testing.F) {
	f.Add([]byte{0, 0, 0x80, 0x7f, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}, uint8(0), uint16(3))
	f.Fuzz(func(t *testing.T, raw []byte, dist uint8, k uint16) {
		theta, seed := fuzzFloats(raw)
		d := Distance(dist % 3)
		pieces := []SiloPiece{{theta, seed}}
		var sel Selector
		got, gotKept := sel.TopK(int64(k), d, pieces, 1)
		restore := SetMaxISA(Generic)
		want, wantKept := sel.TopK(int64(k), d, pieces, 1)
		restore()
		if !sameBits(got.Q, want.Q) || got.TieEnd != want.TieEnd || gotKept != wantKept {
			t.Fatalf("TopK = %+v, %d; generic %+v, %d", got, gotKept, want, wantKept)
		}
		checkSelection(t, "fuzz", pieces, d, int64(k), got, gotKept)
	})
}

// TestTopKSampled covers the sampled fast path of large silos: it must
// agree with the reference when its bracket holds the k-th key, and fall
// back to the radix passes (still exact) when the sample misleads it —
// here by planting huge values at the sampled positions — or when ties
// make the bracket too full.
func TestTopKSampled(t *testing.T) {
	n := sampleMinSilo + 123
	rng := rand.New(rand.NewPCG(29, 30))
	poisoned := func() ([]float32, []float32) {
		theta, seed := makeData(rng, n, dataNormal)
		stride := int64(n) / sampleSize
		for i := range int64(sampleSize) {
			pos := i*stride + int64(uint64(i)*0x9e3779b97f4a7c15>>40)%stride
			theta[pos] = seed[pos]
		}
		return theta, seed
	}
	for _, c := range []struct {
		name string
		data func() ([]float32, []float32)
	}{
		{"normal", func() ([]float32, []float32) { return makeData(rng, n, dataNormal) }},
		{"ties", func() ([]float32, []float32) { return makeData(rng, n, dataTies) }},
		{"poisoned", poisoned},
	} {
		theta, seed := c.data()
		pieces := splitPieces(rng, theta, seed, 3)
		for _, k := range []int64{100, int64(n / 50)} {
			var want Threshold
			var sel Selector
			forISAs(t, func(t *testing.T, isa ISA) {
				for _, threads := range []int{1, 2} {
					th, kept := sel.TopK(k, DistanceAbs, pieces, threads)
					if want == (Threshold{}) {
						want = th
						checkSelection(t, c.name, pieces, DistanceAbs, k, th, kept)
					} else if th != want {
						t.Fatalf("%s k=%d threads=%d: %+v, another run gave %+v", c.name, k, threads, th, want)
					}
				}
			})
		}
	}
}

// TestSelectionKernels checks the selection passes' kernels directly on
// every length 0..130 (and a few larger) against loops over orderedKey:
// the four-copy histogram, the prefix histogram, prefix collection and
// range collection, for every score mode.
func TestSelectionKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	forISAs(t, func(t *testing.T, isa ISA) {
		for _, kind := range dataKinds {
			for _, n := range sizes(t) {
				theta, seed := makeData(rng, n, kind)
				for _, d := range []Distance{DistanceAbs, DistanceRel, DistanceInvRel, distanceValue} {
					s := seed
					if d == distanceValue {
						s = nil
					}
					keys := make([]uint32, n)
					for i := range keys {
						sc := theta[i]
						if s != nil {
							sc = refScore(theta[i], s[i], d)
						}
						keys[i] = orderedKey(sc)
					}
					var pick uint32 = 0x80000000
					if n > 0 {
						pick = keys[rng.IntN(n)]
					}
					for _, shift := range []uint{21, 10, 0} {
						var got, want [histCopies * histBuckets]uint32
						histogramBlock(&got, theta, s, d, shift)
						for i, k := range keys {
							want[(i&3)*histBuckets+int(k>>shift&digitMask)]++
						}
						if got != want {
							t.Fatalf("%v n=%d %v: histogram (shift %d) differs", kind, n, d, shift)
						}
					}
					pmask := uint32(0xffe00000)
					prefix := pick & pmask
					var got, want [histCopies * histBuckets]uint32
					histogramPrefixBlock(&got, theta, s, d, 10, pmask, prefix)
					var wantKeys []uint32
					for _, k := range keys {
						if k&pmask == prefix {
							want[k>>10&digitMask]++
							wantKeys = append(wantKeys, k)
						}
					}
					if got != want {
						t.Fatalf("%v n=%d %v: prefix histogram differs", kind, n, d)
					}
					out := make([]uint32, len(wantKeys)+3)
					if c := collectBlock(out, theta, s, d, pmask, prefix); c != len(wantKeys) || !slices.Equal(out[:c], wantKeys) {
						t.Fatalf("%v n=%d %v: collected %d keys, want %d", kind, n, d, c, len(wantKeys))
					}
					if len(wantKeys) > 0 {
						if c := collectBlock(out[:len(wantKeys)-1], theta, s, d, pmask, prefix); c != -1 {
							t.Fatalf("%v n=%d %v: collection into a short buffer returned %d, want -1", kind, n, d, c)
						}
					}
					lo, hi := pick, pick
					if n > 0 {
						lo, hi = min(pick, keys[0]), max(pick, keys[0])
					}
					var inRange []uint32
					var above int64
					for _, k := range keys {
						if k > hi {
							above++
						} else if k >= lo {
							inRange = append(inRange, k)
						}
					}
					out = make([]uint32, len(inRange))
					c, a := collectRangeBlock(out, theta, s, d, lo, hi)
					if c != len(inRange) || a != above || !slices.Equal(out[:c], inRange) {
						t.Fatalf("%v n=%d %v: range collection %d keys / %d above, want %d / %d", kind, n, d, c, a, len(inRange), above)
					}
				}
			}
		}
	})
}
