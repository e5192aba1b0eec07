package onnx

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadFileNamesSafetensors: a delta or an adapter given where a model
// belongs is named as what it is, not as malformed protobuf.
func TestReadFileNamesSafetensors(t *testing.T) {
	header := `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	data := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	data = append(append(data, header...), 0, 0, 128, 63)
	path := filepath.Join(t.TempDir(), "adapter_model.safetensors")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(path)
	if err == nil || !strings.Contains(err.Error(), path+" is a safetensors file, not an ONNX model") {
		t.Errorf("ReadFile of a safetensors file: %v", err)
	}
}
