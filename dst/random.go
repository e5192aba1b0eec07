package dst

import (
	"hash/fnv"
	"math/rand/v2"
)

// randomMask chooses the silo's k free entries uniformly at random, once:
// the paper's random baseline. The choice depends only on the seed, the
// silo's name and its size (Floyd's sampling of k distinct positions from
// a PCG stream seeded by (seed, FNV-1a of the name)).
func (m *Method) randomMask(s *siloState) {
	h := fnv.New64a()
	h.Write([]byte(s.Name))
	rng := rand.New(rand.NewPCG(m.opts.Seed, h.Sum64()))
	chosen := make([]uint64, (s.size+63)/64)
	for j := s.size - s.k; j < s.size; j++ {
		t := rng.Int64N(j + 1)
		if chosen[t/64]>>(t%64)&1 != 0 {
			t = j
		}
		chosen[t/64] |= 1 << (t % 64)
	}
	for j, i := range s.pieces {
		off := s.offsets[j]
		kept := s.kept[j][:0]
		for pos := range len(m.params[i].Value) {
			if b := off + int64(pos); chosen[b/64]>>(b%64)&1 != 0 {
				kept = append(kept, int32(pos))
			}
		}
		s.kept[j] = kept
	}
	copyKept(s)
}
