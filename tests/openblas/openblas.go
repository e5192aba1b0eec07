//go:build openblas && cgo && linux

package openblas

// #cgo LDFLAGS: -lopenblas
// #include <cblas.h>
import "C"

// SetThreads sets the number of threads OpenBLAS uses for later calls.
func SetThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

// CoreName is the kernel family OpenBLAS chose for this CPU (DYNAMIC_ARCH
// builds pick it at load time; OPENBLAS_CORETYPE overrides).
func CoreName() string { return C.GoString(C.openblas_get_corename()) }

// Config is OpenBLAS's build configuration string (version, options).
func Config() string { return C.GoString(C.openblas_get_config()) }

// Sgemm calls cblas_sgemm on row-major matrices with kernels.Sgemm's
// argument conventions. The slices must be long enough (the caller checks
// with kernels.Sgemm's rules; nothing is checked here).
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ta, tb := uint32(C.CblasNoTrans), uint32(C.CblasNoTrans)
	if transA {
		ta = C.CblasTrans
	}
	if transB {
		tb = C.CblasTrans
	}
	var pa, pb *C.float
	if len(a) > 0 {
		pa = (*C.float)(&a[0])
	}
	if len(b) > 0 {
		pb = (*C.float)(&b[0])
	}
	C.cblas_sgemm(C.CblasRowMajor, ta, tb, C.blasint(m), C.blasint(n), C.blasint(k),
		C.float(alpha), pa, C.blasint(lda), pb, C.blasint(ldb),
		C.float(beta), (*C.float)(&c[0]), C.blasint(ldc))
}
