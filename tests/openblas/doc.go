// Package openblas measures kernels.Sgemm side by side with OpenBLAS's
// cblas_sgemm in the same process. It is kept out of the main build (cgo
// and a system library) behind the openblas build tag; without the tag the
// package is empty. See README.md for how to run it.
package openblas
