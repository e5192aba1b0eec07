package onnx

import (
	"bytes"
	"testing"
)

// TestEncodeRoundTrip: for every model in the test data,
// Decode(Encode(m)) equals m, and encoding is deterministic and stable
// (encoding the decoded copy gives the same bytes).
func TestEncodeRoundTrip(t *testing.T) {
	for _, p := range testdataModels(t) {
		m, err := ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := Encode(m)
		if err != nil {
			t.Errorf("%s: Encode: %v", relName(t, p), err)
			continue
		}
		back, err := Decode(enc, m.Dir)
		if err != nil {
			t.Errorf("%s: decoding the encoded model: %v", relName(t, p), err)
			continue
		}
		if d := diff(m, back); d != "" {
			t.Errorf("%s: round trip differs at %s", relName(t, p), d)
		}
		again, err := Encode(back)
		if err != nil || !bytes.Equal(enc, again) {
			t.Errorf("%s: re-encoding the decoded copy gives other bytes (err %v)", relName(t, p), err)
		}
		m.Close()
		back.Close()
	}
}
