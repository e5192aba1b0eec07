// Package jsontext finds, in raw JSON text, what encoding/json would
// silently turn into U+FFFD (bytes that are not UTF-8, an escape of half
// a UTF-16 surrogate pair), and where a byte offset lies as line and
// column: for the readers of data lines, request bodies and spec files
// to name the place in their errors.
package jsontext

import (
	"bytes"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// InvalidUTF8 is the offset of the first byte of text that is not part
// of valid UTF-8, or -1 when text is valid.
func InvalidUTF8(text []byte) int {
	if utf8.Valid(text) {
		return -1
	}
	at := 0
	for at < len(text) {
		r, size := utf8.DecodeRune(text[at:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		at += size
	}
	return at
}

// LoneSurrogate is the offset in raw JSON text of a \uXXXX escape of
// half a UTF-16 surrogate pair without its other half (it stands for no
// character), or -1 when there is none. raw[at:at+6] is the escape.
func LoneSurrogate(raw []byte) int {
	for i := 0; i < len(raw); i++ {
		next := bytes.IndexByte(raw[i:], '\\')
		if next < 0 {
			return -1
		}
		i += next
		r, ok := escape(raw, i)
		switch {
		case !ok:
			i++ // another escape: its second byte is not a backslash
		case utf16.IsSurrogate(r) && r < 0xDC00:
			if low, ok := escape(raw, i+6); ok && 0xDC00 <= low && low <= 0xDFFF {
				i += 11
				continue
			}
			return i
		case utf16.IsSurrogate(r):
			return i
		default:
			i += 5
		}
	}
	return -1
}

// escape reads the code unit of a \uXXXX escape at raw[i].
func escape(raw []byte, i int) (rune, bool) {
	if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
		return 0, false
	}
	v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
	return rune(v), err == nil
}

// LineColumn is the 1-based line and column of the byte before offset
// in data (encoding/json's SyntaxError.Offset counts the bytes read,
// the offending one included).
func LineColumn(data []byte, offset int64) (line, col int) {
	offset = min(max(offset-1, 0), int64(len(data)))
	before := data[:offset]
	line = 1 + bytes.Count(before, []byte("\n"))
	col = 1 + len(before) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, col
}
