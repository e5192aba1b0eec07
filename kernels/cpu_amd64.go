//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

func detectISA() ISA {
	x := cpu.X86
	if x.HasAVX512F && x.HasAVX512BW && x.HasAVX512DQ && x.HasAVX512VL && x.HasAVX2 && x.HasFMA && x.HasBMI2 {
		return AVX512
	}
	if x.HasAVX2 && x.HasFMA && x.HasBMI2 {
		return AVX2
	}
	return Generic
}
