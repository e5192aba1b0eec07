package tokenizer

import (
	"fmt"
	"math"
	"strconv"
)

// parseSerdeFloat parses a JSON number the way serde_json (without its
// float_roundtrip feature), and so the Rust tokenizers library, reads
// Unigram scores: the decimal digits as an integer (digits past 19 are
// dropped), converted to float64 and then multiplied or divided by a power
// of ten. The result can be one unit in the last place away from the
// correctly rounded value, which decides ties between segmentations, so
// Unigram scores are read this way to pick the same ones.
func parseSerdeFloat(text string) (float64, error) {
	bad := func() (float64, error) { return 0, fmt.Errorf("invalid number %q", text) }
	s := text
	positive := true
	if len(s) > 0 && s[0] == '-' {
		positive = false
		s = s[1:]
	}
	if len(s) == 0 || s[0] < '0' || s[0] > '9' {
		return bad()
	}
	var significand uint64
	exponent := 0
	overflowed := false
	digits := func(afterPoint bool) int {
		n := 0
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			d := uint64(s[0] - '0')
			s = s[1:]
			n++
			if overflowed {
				if !afterPoint {
					exponent++
				}
				continue
			}
			if significand > (math.MaxUint64-d)/10 {
				overflowed = true
				if !afterPoint {
					exponent++
				}
				continue
			}
			significand = significand*10 + d
			if afterPoint {
				exponent--
			}
		}
		return n
	}
	if s[0] == '0' {
		s = s[1:]
		if len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			return bad()
		}
	} else {
		digits(false)
	}
	if len(s) > 0 && s[0] == '.' {
		s = s[1:]
		if digits(true) == 0 {
			return bad()
		}
	}
	if len(s) > 0 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		sign := 1
		if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
			if s[0] == '-' {
				sign = -1
			}
			s = s[1:]
		}
		if len(s) == 0 {
			return bad()
		}
		e := 0
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			if e < 1<<20 {
				e = e*10 + int(s[0]-'0')
			}
			s = s[1:]
		}
		exponent += sign * e
	}
	if len(s) > 0 {
		return bad()
	}
	f := float64(significand)
	for {
		if a := abs(exponent); a < len(pow10) {
			if exponent >= 0 {
				f *= pow10[a]
				if math.IsInf(f, 0) {
					return 0, fmt.Errorf("number %q out of range", text)
				}
			} else {
				f /= pow10[a]
			}
			break
		}
		if f == 0 {
			break
		}
		if exponent >= 0 {
			return 0, fmt.Errorf("number %q out of range", text)
		}
		f /= 1e308
		exponent += 308
	}
	if !positive {
		f = -f
	}
	return f, nil
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// pow10[i] is 1e<i>, correctly rounded (as Rust's float literals are).
var pow10 = func() [309]float64 {
	var p [309]float64
	for i := range p {
		v, err := strconv.ParseFloat("1e"+strconv.Itoa(i), 64)
		if err != nil {
			panic("tokenizer: " + err.Error())
		}
		p[i] = v
	}
	return p
}()
