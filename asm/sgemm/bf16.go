package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
)

// Neither avo v0.6.0 nor the Go assembler knows the AVX512_BF16
// instructions. The generator emits them as placeholder instructions, so
// that avo allocates their registers and tracks their liveness like any
// other, and after avo has written the file rewrites each placeholder line
// into the instruction's EVEX bytes, keeping the instruction as a comment.
// Only the register forms are used (zmm operands, no masking).

// bf16Instructions are the placeholder opcodes with their EVEX encoding
// parameters: opcode byte in map 0F38, W0, and the pp prefix (F3 = 2,
// F2 = 3).
var bf16Instructions = map[string]struct{ opcode, pp byte }{
	"VDPBF16PS":      {0x52, 2},
	"VCVTNE2PS2BF16": {0x72, 3},
}

// VDPBF16PS emits acc[i] += a.bf16[2i+1]·b.bf16[2i+1] + a.bf16[2i]·b.bf16[2i]
// over the 16 float32 lanes of acc (Go operand order: b, a, acc).
func VDPBF16PS(b, a, acc Op) { bf16Instruction("VDPBF16PS", b, a, acc) }

// VCVTNE2PS2BF16 emits dst = the 32 bfloat16 values (round to nearest even)
// of lo's 16 floats in words 0..15 and hi's in words 16..31 (Go operand
// order: lo, hi, dst).
func VCVTNE2PS2BF16(lo, hi, dst Op) { bf16Instruction("VCVTNE2PS2BF16", lo, hi, dst) }

func bf16Instruction(opcode string, rm, vvvv, dst Op) {
	inputs := []Op{rm, vvvv}
	if opcode == "VDPBF16PS" {
		inputs = append(inputs, dst) // accumulates
	}
	Instruction(&ir.Instruction{
		Opcode:   opcode,
		Operands: []Op{rm, vvvv, dst},
		Inputs:   inputs,
		Outputs:  []Op{dst},
		ISA:      []string{"AVX512_BF16", "AVX512F"},
	})
}

// evexBytes encodes a 512-bit, unmasked, register-only instruction of map
// 0F38 with W0: EVEX prefix, opcode, ModRM.
func evexBytes(opcode, pp byte, rm, vvvv, dst int) []byte {
	inv := func(x, bit int) byte { return byte(^(x >> bit) & 1) }
	p0 := inv(dst, 3)<<7 | inv(rm, 4)<<6 | inv(rm, 3)<<5 | inv(dst, 4)<<4 | 0b10
	p1 := byte(^vvvv&0xf)<<3 | 1<<2 | pp
	p2 := byte(0b10)<<5 | inv(vvvv, 4)<<3
	modrm := 0xc0 | byte(dst&7)<<3 | byte(rm&7)
	return []byte{0x62, p0, p1, p2, opcode, modrm}
}

var placeholderLine = regexp.MustCompile(`^\t(VDPBF16PS|VCVTNE2PS2BF16)\s+Z(\d+), Z(\d+), Z(\d+)$`)

// rewriteBF16 replaces the placeholder lines of the assembly file at path
// with their bytes.
func rewriteBF16(path string) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.Split(string(src), "\n")
	for i, line := range lines {
		m := placeholderLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		enc := bf16Instructions[m[1]]
		reg := func(s string) int { n, _ := strconv.Atoi(s); return n }
		bytes := evexBytes(enc.opcode, enc.pp, reg(m[2]), reg(m[3]), reg(m[4]))
		words := make([]string, len(bytes))
		for j, b := range bytes {
			words[j] = fmt.Sprintf("BYTE $0x%02x", b)
		}
		lines[i] = fmt.Sprintf("\t// %s Z%s, Z%s, Z%s\n\t%s", m[1], m[2], m[3], m[4], strings.Join(words, "; "))
	}
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644)
}
