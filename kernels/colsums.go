package kernels

// ColumnSumsF64 adds rows rows of x, ld apart, to acc in float64, each
// column's rows in order, so the sums have the bits of
//
//	for i := range acc {
//		for r := range rows {
//			acc[i] += float64(x[r*ld+i])
//		}
//	}
//
// on every ISA (a bias gradient's sum over the batch: the assembly holds
// one column per float64 lane).
func ColumnSumsF64(acc []float64, x []float32, ld, rows int) {
	n := len(acc)
	if rows <= 0 || n == 0 {
		return
	}
	if ld < n || len(x) < (rows-1)*ld+n {
		panic("kernels: ColumnSumsF64 rows shorter than acc")
	}
	colSumsF64(acc, x[:(rows-1)*ld+n], ld, rows)
}

func colSumsF64Generic(acc []float64, x []float32, ld, rows int) {
	for r := range rows {
		for i, v := range x[r*ld : r*ld+len(acc)] {
			acc[i] += float64(v)
		}
	}
}
