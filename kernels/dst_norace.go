//go:build !race

package kernels

const raceEnabled = false

func raceReadFloats(s []float32)  {}
func raceWriteFloats(s []float32) {}
func raceWriteInt32s(s []int32)   {}
func raceWriteUint32s(s []uint32) {}
