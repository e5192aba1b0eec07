package tokenizer

import "unicode/utf8"

// GPT-2's byte-level alphabet: every byte is shown as a printable code
// point, so that BPE works on bytes while its vocabulary stays text. The
// printable bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' stand for themselves;
// the other 68 bytes, in order, become U+0100, U+0101, ...
var (
	byteToRune [256]rune
	runeToByte = map[rune]byte{}
	// byteToString[b] is string(byteToRune[b]), precomputed.
	byteToString [256]string
)

func init() {
	next := rune(256)
	for b := 0; b < 256; b++ {
		r := rune(b)
		printable := '!' <= b && b <= '~' || 0xA1 <= b && b <= 0xAC || 0xAE <= b && b <= 0xFF
		if !printable {
			r = next
			next++
		}
		byteToRune[b] = r
		runeToByte[r] = byte(b)
		byteToString[b] = string(r)
	}
}

// byteLevelEncode maps every byte of s to its byte-level code point.
func byteLevelEncode(s string) string {
	buf := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		buf = utf8.AppendRune(buf, byteToRune[s[i]])
	}
	return string(buf)
}

// byteLevelDecode maps a token's byte-level code points back to bytes, or
// returns the token's own bytes when one of its code points is not in the
// alphabet (Rust's ByteLevel decoder does the same).
func byteLevelDecode(dst []byte, token string) []byte {
	start := len(dst)
	for _, r := range token {
		b, ok := runeToByte[r]
		if !ok {
			return append(dst[:start], token...)
		}
		dst = append(dst, b)
	}
	return dst
}
