//go:build !amd64 || purego

package kernels

func detectISA() ISA { return Generic }
