package jsontext

import "testing"

func TestInvalidUTF8(t *testing.T) {
	for text, want := range map[string]int{"": -1, "abc é": -1, "ab\xffc": 2, "é\xc3": 2, "\x80": 0} {
		if got := InvalidUTF8([]byte(text)); got != want {
			t.Errorf("InvalidUTF8(%q) = %d, want %d", text, got, want)
		}
	}
}

func TestLoneSurrogate(t *testing.T) {
	for raw, want := range map[string]int{
		`"plain"`:              -1,
		`"\ud83d\ude00 pair"`:  -1,
		`"\\ud800 escaped"`:    -1,
		`"x \ud800 y"`:         3,
		`"\udc00"`:             1,
		`"\ud800\u0041"`:       1,
		`"\n\ud83d"`:           3,
		`"\uDBFF\uDFFF ok"`:    -1,
		`"bad \u12 short"`:     -1,
		`{"a":"\ud800","b":1}`: 6,
	} {
		if got := LoneSurrogate([]byte(raw)); got != want {
			t.Errorf("LoneSurrogate(%s) = %d, want %d", raw, got, want)
		}
	}
}

func TestLineColumn(t *testing.T) {
	data := []byte("ab\ncd\nef")
	for _, c := range []struct {
		offset    int64
		line, col int
	}{{0, 1, 1}, {1, 1, 1}, {2, 1, 2}, {4, 2, 1}, {8, 3, 2}, {99, 3, 3}} {
		if l, col := LineColumn(data, c.offset); l != c.line || col != c.col {
			t.Errorf("LineColumn(%d) = %d:%d, want %d:%d", c.offset, l, col, c.line, c.col)
		}
	}
}
