package kernels

// Sgemm computes C = alpha·op(A)·op(B) + beta·C for row-major float32
// matrices, where op(X) is X or Xᵀ as transA/transB say; C is m×n, op(A) is
// m×k, op(B) is k×n; lda, ldb, ldc are the row strides. When beta is 0, C
// is not read (NaN in C does not propagate). threads <= 0 means
// DefaultThreads(). The equivalent Go loop:
//
//	for i := range m {
//		for j := range n {
//			var s float32
//			for p := range k {
//				s += A(i, p) * B(p, j) // A(i,p) = a[i*lda+p], or a[p*lda+i] when transA
//			}
//			c[i*ldc+j] = alpha*s + beta*c[i*ldc+j] // just alpha*s when beta == 0
//		}
//	}
func Sgemm(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkGemmArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	sgemmGeneric(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// SgemmBatched computes batch independent products with Sgemm's semantics;
// product i uses a[i*strideA:], b[i*strideB:] and c[i*strideC:]. It is the
// shape of attention (many small products).
func SgemmBatched(threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda, strideA int, b []float32, ldb, strideB int, beta float32, c []float32, ldc, strideC int, batch int) {
	if batch < 0 {
		panic("kernels: SgemmBatched batch < 0")
	}
	for i := range batch {
		Sgemm(threads, transA, transB, m, n, k, alpha, a[i*strideA:], lda, b[i*strideB:], ldb, beta, c[i*strideC:], ldc)
	}
}

func checkGemmArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic("kernels: Sgemm negative dimension")
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if lda < max(ac, 1) {
		panic("kernels: Sgemm lda too small")
	}
	if ldb < max(bc, 1) {
		panic("kernels: Sgemm ldb too small")
	}
	if ldc < max(n, 1) {
		panic("kernels: Sgemm ldc too small")
	}
	if ar > 0 && ac > 0 && len(a) < (ar-1)*lda+ac {
		panic("kernels: Sgemm len(a) too short")
	}
	if br > 0 && bc > 0 && len(b) < (br-1)*ldb+bc {
		panic("kernels: Sgemm len(b) too short")
	}
	if m > 0 && n > 0 && len(c) < (m-1)*ldc+n {
		panic("kernels: Sgemm len(c) too short")
	}
}

// sgemmGeneric is the reference: straightforward loops, i-p-j order so the
// inner loop streams rows of B and C.
func sgemmGeneric(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := range m {
		ci := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(ci)
		} else if beta != 1 {
			for j := range ci {
				ci[j] *= beta
			}
		}
		for p := range k {
			var aip float32
			if transA {
				aip = a[p*lda+i]
			} else {
				aip = a[i*lda+p]
			}
			s := alpha * aip
			if transB {
				for j := range ci {
					ci[j] += s * b[j*ldb+p]
				}
			} else {
				bp := b[p*ldb : p*ldb+n]
				for j := range ci {
					ci[j] += s * bp[j]
				}
			}
		}
	}
}
