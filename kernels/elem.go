package kernels

// Shared by the element-wise and row kernels (vec.go, exp.go, erf.go,
// tanh.go, gelu.go, softmax.go, crossentropy.go, layernorm.go): argument
// checks and the split of rows across workers.
//
// Conventions of the row kernels: a matrix argument is a slice plus its row
// stride (ld, at least cols); row r of m is m[r*ld : r*ld+cols]. An output
// may be the same matrix as an input (same slice start and stride), never a
// partial overlap. threads <= 0 means DefaultThreads(). Rows are
// independent, so results never depend on the thread count; reductions
// across rows (the cross-entropy loss sum, LayerNorm's dγ and dβ, SumRows)
// run in row order whatever the split.

// elemCheckLen panics with msg unless len(s) >= n.
func elemCheckLen(s []float32, n int, msg string) {
	if len(s) < n {
		panic(msg)
	}
}

// elemCheckMatrix panics unless m holds rows×cols with row stride ld; what
// names the kernel and argument for the message, as "Softmax src".
func elemCheckMatrix(m []float32, rows, cols, ld int, what string) {
	if ld < cols {
		panic("kernels: " + what + " row stride < cols")
	}
	if rows > 0 && cols > 0 && len(m) < (rows-1)*ld+cols {
		panic("kernels: " + what + " too short for rows×cols")
	}
}

func elemCheckDims(rows, cols int, what string) {
	if rows < 0 || cols < 0 {
		panic("kernels: " + what + " negative dimension")
	}
}

// elemMinPerWorker keeps small calls on one goroutine: below it, handing
// work to another core costs more than it saves.
const elemMinPerWorker = 1 << 14

// elemWorkers returns how many workers to split rows×cols across.
func elemWorkers(threads, rows, cols int) int {
	if threads <= 0 {
		threads = DefaultThreads()
	}
	return max(1, min(threads, rows, rows*cols/elemMinPerWorker))
}

// elemRow returns row r of m (stride ld), cols long.
func elemRow(m []float32, r, ld, cols int) []float32 {
	return m[r*ld : r*ld+cols : r*ld+cols]
}
