package ir

import (
	"strings"
	"testing"
)

// Ops whose output may be far larger than their input are bounded by the
// memory limit at import, before anything is allocated: an Expand to
// 8 GiB in a tiny model is an error on a machine (or under a limit)
// without the memory, not an out-of-memory crash.
func TestAmplifyingOpsAreBoundedByTheMemoryLimit(t *testing.T) {
	defer SetMemoryLimit(SetMemoryLimit(64 << 20))
	for _, c := range []struct {
		name string
		op   string
		ins  []nodeInput
	}{
		// 2·1024³ float32 = 8 GiB.
		{"Expand", "Expand", []nodeInput{feed(NewTensor(Float32, Shape{1})), fixed(FromInt64s(Shape{4}, []int64{2, 1024, 1024, 1024}))}},
		// 128 MiB of float32 zeros, folded at import.
		{"ConstantOfShape", "ConstantOfShape", []nodeInput{fixed(FromInt64s(Shape{2}, []int64{1 << 15, 1 << 10}))}},
		// 256 KiB tiled 1024 times.
		{"Tile", "Tile", []nodeInput{feed(NewTensor(Float32, Shape{256, 256})), fixed(FromInt64s(Shape{2}, []int64{32, 32}))}},
		// 256 KiB resized 32×32.
		{"Resize", "Resize", []nodeInput{feed(NewTensor(Float32, Shape{1, 1, 256, 256})), omitted, fixed(FromFloat32s(Shape{4}, []float32{1, 1, 32, 32}))}},
	} {
		m, _ := oneNodeModel(t, 17, c.op, nil, c.ins, 1)
		model, err := NewModel(m)
		if err == nil {
			_, err = model.Specialize(Bindings{})
		}
		if err == nil || !strings.Contains(err.Error(), "more than the memory limit of 64.0 MiB") {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// Under a limit that allows them, the same models import.
	SetMemoryLimit(512 << 20)
	m, _ := oneNodeModel(t, 17, "Tile", nil, []nodeInput{feed(NewTensor(Float32, Shape{256, 256})), fixed(FromInt64s(Shape{2}, []int64{32, 32}))}, 1)
	model, err := NewModel(m)
	if err == nil {
		_, err = model.Specialize(Bindings{})
	}
	if err != nil {
		t.Errorf("Tile to 256 MiB under a 512 MiB limit: %v", err)
	}
}
