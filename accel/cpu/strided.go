package cpu

import (
	"unsafe"

	"github.com/dstune/dstune/ir"
)

// stridedKernel copies a strided view of its input into a dense output,
// for any element width: output element (i₀, …, iᵣ₋₁), in row-major
// order, is input element offset + Σ i_d·strides[d]. Transpose (permuted
// strides), Slice (scaled strides and a start offset) and Expand (zero
// strides) are all this.
//
// The view is first coalesced (axes of size one dropped, neighbours that
// are one run in the input merged), and then copied in one of three ways:
// rows whose input is contiguous as memmoves (the head transposes of
// attention, [b,t,h,d] ↔ [b,h,t,d], and slices of the last axis); a batch
// of matrix transposes, where the input's contiguous axis is the
// output's second last, in square tiles so that both sides are read and
// written a cache line at a time (the last-two-axes swaps, [b,h,t,d] →
// [b,h,d,t]); and any other view element by element. A copy is exact,
// so the result cannot depend on how the work is split.
type stridedKernel struct {
	x, y    []byte
	width   int
	shape   []int // output shape
	strides []int // input element strides, one per output axis
	offset  int   // input element of the output's first

	tiled   bool    // a batch of matrix transposes (shape[r-2] has stride 1)
	band    int     // tiled: output rows per unit of work
	idx     [][]int // per worker, the odometer of row copies
	workers int
	split   splitter
}

// transposeRows is the number of output rows a batched matrix
// transpose fills at a time, column block by column block: 16 elements of
// 4 bytes are a cache line, so a band reads whole lines of the input.
// Where the output rows lie a multiple of 4 KiB apart, they all fall in
// one set of the L1 cache (64 sets of 64 bytes), which holds fewer than
// 16 lines (12 ways on Zen 5, 8 on older cores): those bands are 8 rows.
const (
	transposeRows        = 16
	transposeAliasedRows = 8
)

// finish coalesces the view, picks how it is copied and sets up the
// per-worker state.
func (k *stridedKernel) finish(threads int) kernel {
	n := ir.Shape(k.shape).Size()
	k.workers = workersFor(threads, n)
	if n == 0 {
		return k // split.units is 0: nothing to copy
	}
	k.shape, k.strides = coalesceView(k.shape, k.strides)
	r := len(k.shape)
	if r >= 2 && k.strides[r-2] == 1 && k.strides[r-1] != 1 {
		k.tiled = true
		m, cols := k.shape[r-2], k.shape[r-1]
		k.band = transposeRows
		if cols*k.width%4096 == 0 {
			k.band = transposeAliasedRows
		}
		bands := (m + k.band - 1) / k.band
		k.split = splitter{units: ir.Shape(k.shape[:r-2]).Size() * bands, align: 1, share: k.shareTiles}
		return k
	}
	for range k.workers {
		k.idx = append(k.idx, make([]int, r))
	}
	k.split = splitter{units: n / k.shape[r-1], align: 1, share: k.shareRows}
	return k
}

// coalesceView drops the axes of size one of a strided view of a
// non-empty tensor and merges each axis into the one before it where the
// two are one run of the input (the outer stride is the inner one times
// the inner size). The result has rank ≥ 1.
func coalesceView(shape, strides []int) ([]int, []int) {
	var s, st []int
	for d := range shape {
		if shape[d] == 1 {
			continue
		}
		if last := len(s) - 1; last >= 0 && st[last] == strides[d]*shape[d] {
			s[last] *= shape[d]
			st[last] = strides[d]
			continue
		}
		s = append(s, shape[d])
		st = append(st, strides[d])
	}
	if len(s) == 0 {
		return []int{1}, []int{1}
	}
	return s, st
}

func (k *stridedKernel) run() error {
	k.split.run(k.workers)
	return nil
}

// shareRows copies output rows [lo, hi).
func (k *stridedKernel) shareRows(lo, hi, w int) {
	r := len(k.shape)
	inner := k.shape[r-1]
	idx := k.idx[w]
	// idx and the input offset of row lo
	base := k.offset
	row := lo
	for d := r - 2; d >= 0; d-- {
		idx[d] = row % k.shape[d]
		row /= k.shape[d]
		base += idx[d] * k.strides[d]
	}
	y0, y1 := lo*inner, hi*inner
	switch k.width {
	case 4:
		gatherRows(words[uint32](k.y)[y0:y1], words[uint32](k.x), base, k.shape, k.strides, idx)
	case 8:
		gatherRows(words[uint64](k.y)[y0:y1], words[uint64](k.x), base, k.shape, k.strides, idx)
	case 2:
		gatherRows(words[uint16](k.y)[y0:y1], words[uint16](k.x), base, k.shape, k.strides, idx)
	default:
		gatherRows(k.y[y0:y1], k.x, base, k.shape, k.strides, idx)
	}
}

// shareTiles copies bands [lo, hi) of a batched matrix transpose: band u
// is up to k.band rows of output matrix u / bands.
func (k *stridedKernel) shareTiles(lo, hi, w int) {
	r := len(k.shape)
	m, n := k.shape[r-2], k.shape[r-1]
	ld := k.strides[r-1]
	bands := (m + k.band - 1) / k.band
	for u := lo; u < hi; u++ {
		batch, band := u/bands, u%bands
		base := k.offset
		for d, b := r-3, batch; d >= 0; d-- {
			base += b % k.shape[d] * k.strides[d]
			b /= k.shape[d]
		}
		i0 := band * k.band
		i1 := min(m, i0+k.band)
		y0, y1 := (batch*m+i0)*n, (batch*m+i1)*n
		base += i0
		switch k.width {
		case 4:
			transposeBand(words[uint32](k.y)[y0:y1], words[uint32](k.x), base, ld, i1-i0, n)
		case 8:
			transposeBand(words[uint64](k.y)[y0:y1], words[uint64](k.x), base, ld, i1-i0, n)
		case 2:
			transposeBand(words[uint16](k.y)[y0:y1], words[uint16](k.x), base, ld, i1-i0, n)
		default:
			transposeBand(k.y[y0:y1], k.x, base, ld, i1-i0, n)
		}
	}
}

// transposeBand sets y[i*n + j] = x[base + i + j*ld] for i < m, j < n
// (m is a band of a few rows), in blocks of 4×4 held in registers: each block
// reads four runs of four from four input rows and writes four runs of
// four to four output rows, so a band reads m contiguous elements from
// each input row and writes whole cache lines of its output rows.
func transposeBand[W uint8 | uint16 | uint32 | uint64](y, x []W, base, ld, m, n int) {
	y = y[:m*n]
	m4, n4 := m&^3, n&^3
	for j := 0; j < n4; j += 4 {
		x0 := base + j*ld
		for i := 0; i < m4; i += 4 {
			c0 := x[x0+i : x0+i+4]
			c1 := x[x0+ld+i : x0+ld+i+4]
			c2 := x[x0+2*ld+i : x0+2*ld+i+4]
			c3 := x[x0+3*ld+i : x0+3*ld+i+4]
			r0 := y[i*n+j : i*n+j+4]
			r1 := y[(i+1)*n+j : (i+1)*n+j+4]
			r2 := y[(i+2)*n+j : (i+2)*n+j+4]
			r3 := y[(i+3)*n+j : (i+3)*n+j+4]
			r0[0], r0[1], r0[2], r0[3] = c0[0], c1[0], c2[0], c3[0]
			r1[0], r1[1], r1[2], r1[3] = c0[1], c1[1], c2[1], c3[1]
			r2[0], r2[1], r2[2], r2[3] = c0[2], c1[2], c2[2], c3[2]
			r3[0], r3[1], r3[2], r3[3] = c0[3], c1[3], c2[3], c3[3]
		}
		for i := m4; i < m; i++ {
			r := y[i*n+j : i*n+j+4]
			r[0], r[1], r[2], r[3] = x[x0+i], x[x0+ld+i], x[x0+2*ld+i], x[x0+3*ld+i]
		}
	}
	for j := n4; j < n; j++ {
		col := x[base+j*ld : base+j*ld+m]
		for i, v := range col {
			y[i*n+j] = v
		}
	}
}

// words views a byte buffer (8-byte aligned, from the arena or a tensor)
// as a slice of W.
func words[W uint16 | uint32 | uint64](b []byte) []W {
	var z W
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*W)(unsafe.Pointer(&b[0])), len(b)/int(unsafe.Sizeof(z)))
}

// gatherRows fills y, whole rows of the output (row-major over shape,
// rank ≥ 1), with x[base + Σ index·stride]; idx (len(shape)) and base
// describe the first row and advance like an odometer. Strides may be
// negative (a reversed slice) or zero (a broadcast); a row of stride one
// is a memmove.
func gatherRows[W uint8 | uint16 | uint32 | uint64](y, x []W, base int, shape, strides, idx []int) {
	r := len(shape)
	inner, step := shape[r-1], strides[r-1]
	for o := 0; o < len(y); o += inner {
		row := y[o : o+inner]
		if step == 1 {
			copy(row, x[base:base+inner])
		} else {
			for i := range row {
				row[i] = x[base+i*step]
			}
		}
		for d := r - 2; d >= 0; d-- {
			idx[d]++
			base += strides[d]
			if idx[d] < shape[d] {
				break
			}
			base -= strides[d] * shape[d]
			idx[d] = 0
		}
	}
}
