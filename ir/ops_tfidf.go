package ir

import (
	"encoding/binary"
	"fmt"

	"github.com/dstune/dstune/onnx"
)

func init() {
	registerOp("", "TfIdfVectorizer", importTfIdfVectorizer)
}

// TfIdfVectorizer counts, in every row of X ([C] or [B, C], integers or
// strings), the n-grams of the pool: for n from MinGram to MaxGram and
// every skip from 0 to MaxSkip, the items x[i], x[i+skip+1], ... (n of
// them) form an n-gram; unigrams are counted once, not once per skip.
// Each pool n-gram has an output column (Indexes); the output ([Size] or
// [B, Size], float32) is the count (TF), 1 when the count is not 0 (IDF),
// or the count (TFIDF), multiplied by the column's weight when Weights are
// given (IDF, TFIDF).
type TfIdfVectorizer struct {
	MinGram, MaxGram, MaxSkip int
	Mode                      string // TF, IDF or TFIDF
	Size                      int    // output columns: max(Indexes) + 1
	Weights                   []float32
	// grams maps an n-gram's key (gramKey of its items) to its output
	// column.
	grams map[string]int
	input DType
}

func (op *TfIdfVectorizer) Name() string  { return "TfIdfVectorizer" }
func (op *TfIdfVectorizer) foldsStrings() {}

func (op *TfIdfVectorizer) Infer(in []Type) ([]Type, error) {
	if err := wantInputs(in, 1, 1); err != nil {
		return nil, err
	}
	x := in[0]
	if x.DType != op.input {
		return nil, fmt.Errorf("X is %s, the pool holds %s", x.DType, op.input)
	}
	switch len(x.Shape) {
	case 1:
		return []Type{{Float32, Shape{op.Size}}}, nil
	case 2:
		return []Type{{Float32, Shape{x.Shape[0], op.Size}}}, nil
	}
	return nil, fmt.Errorf("X is %v, want [C] or [B, C]", x)
}

// gramKey encodes items as a map key: integers as 8 bytes each, strings
// length-prefixed.
func gramKey(buf []byte, x *Tensor, at []int) []byte {
	buf = buf[:0]
	for _, i := range at {
		if x.dtype == String {
			buf = binary.AppendUvarint(buf, uint64(len(x.strs[i])))
			buf = append(buf, x.strs[i]...)
		} else {
			buf = binary.LittleEndian.AppendUint64(buf, uint64(x.Int64At(i)))
		}
	}
	return buf
}

func (op *TfIdfVectorizer) Eval(in, out []*Tensor) error {
	x, y := in[0], out[0]
	rows, cols := 1, x.Len()
	if len(x.shape) == 2 {
		rows, cols = x.shape[0], x.shape[1]
	}
	counts := make([]float64, op.Size)
	var key []byte
	at := make([]int, 0, op.MaxGram)
	for r := range rows {
		clear(counts)
		minGram := op.MinGram
		for skip := 0; skip <= op.MaxSkip && minGram <= op.MaxGram; skip++ {
			step := skip + 1
			for start := range cols {
				at = at[:0]
				for n := 1; n <= op.MaxGram; n++ {
					pos := start + (n-1)*step
					if pos >= cols {
						break
					}
					at = append(at, r*cols+pos)
					if n < minGram {
						continue
					}
					key = gramKey(key, x, at)
					if col, ok := op.grams[string(key)]; ok {
						counts[col]++
					}
				}
			}
			if minGram == 1 {
				minGram = 2 // unigrams do not depend on the skip
			}
		}
		row := y.Float32s()[r*op.Size : (r+1)*op.Size]
		for c, f := range counts {
			v := f
			switch op.Mode {
			case "IDF":
				if f > 0 {
					v = 1
				}
				if op.Weights != nil && f > 0 {
					v = float64(op.Weights[c])
				}
			case "TFIDF":
				if op.Weights != nil {
					v = float64(op.Weights[c]) * f
				}
			}
			row[c] = float32(v)
		}
	}
	return nil
}

func importTfIdfVectorizer(im *importer, n *onnx.Node, in []*Value) ([]*Value, error) {
	if err := wantIn(in, 1, 1); err != nil {
		return nil, err
	}
	op := &TfIdfVectorizer{}
	var err error
	for _, a := range []struct {
		name string
		dst  *int
	}{{"min_gram_length", &op.MinGram}, {"max_gram_length", &op.MaxGram}, {"max_skip_count", &op.MaxSkip}} {
		if n.Attr(a.name) == nil {
			return nil, fmt.Errorf("attribute %s is required", a.name)
		}
		if *a.dst, err = attrInt(n, a.name, 0); err != nil {
			return nil, err
		}
	}
	if op.MinGram < 1 || op.MaxGram < op.MinGram || op.MaxGram > 1<<10 || op.MaxSkip < 0 {
		return nil, fmt.Errorf("min_gram_length %d, max_gram_length %d, max_skip_count %d", op.MinGram, op.MaxGram, op.MaxSkip)
	}
	if op.Mode, err = n.AttrString("mode", ""); err != nil {
		return nil, err
	}
	if op.Mode != "TF" && op.Mode != "IDF" && op.Mode != "TFIDF" {
		return nil, fmt.Errorf("mode %q, want TF, IDF or TFIDF", op.Mode)
	}
	counts, _, err := attrInts(n, "ngram_counts")
	if err != nil {
		return nil, err
	}
	indexes, _, err := attrInts(n, "ngram_indexes")
	if err != nil {
		return nil, err
	}
	if op.Weights, err = n.AttrFloats("weights", nil); err != nil {
		return nil, err
	}
	// The pool: integers or strings, as a tensor so that gramKey reads
	// it like X.
	var pool *Tensor
	if ints, ok, err := attrInts(n, "pool_int64s"); err != nil {
		return nil, err
	} else if ok {
		pool = FromInt64s(Shape{len(ints)}, toInt64s(ints))
		op.input = in[0].DType
		if op.input != Int32 && op.input != Int64 {
			return nil, fmt.Errorf("X is %s with an integer pool, want int32 or int64", op.input)
		}
	}
	if a := n.Attr("pool_strings"); a != nil {
		if pool != nil {
			return nil, fmt.Errorf("both pool_int64s and pool_strings")
		}
		strs := make([]string, len(a.Strings))
		for i, s := range a.Strings {
			strs[i] = string(s)
		}
		pool, op.input = FromStrings(Shape{len(strs)}, strs), String
	}
	if pool == nil {
		return nil, fmt.Errorf("pool_int64s or pool_strings is required")
	}
	for _, i := range indexes {
		if i < 0 || i >= 1<<24 {
			return nil, fmt.Errorf("ngram_indexes holds %d", i)
		}
		op.Size = max(op.Size, i+1)
	}
	if op.Weights != nil && len(op.Weights) != op.Size {
		return nil, fmt.Errorf("%d weights for %d output columns", len(op.Weights), op.Size)
	}
	// ngram_counts[k] is where the (k+1)-grams start in the pool.
	op.grams = map[string]int{}
	id := 0
	var key []byte
	for k, start := range counts {
		size := k + 1
		end := pool.Len()
		if k+1 < len(counts) {
			end = counts[k+1]
		}
		if start < 0 || end < start || end > pool.Len() || (end-start)%size != 0 {
			return nil, fmt.Errorf("ngram_counts %v for a pool of %d", counts, pool.Len())
		}
		for at := start; at < end; at += size {
			if id >= len(indexes) {
				return nil, fmt.Errorf("the pool has more n-grams than ngram_indexes (%d)", len(indexes))
			}
			if size >= op.MinGram && size <= op.MaxGram {
				items := make([]int, size)
				for j := range items {
					items[j] = at + j
				}
				key = gramKey(key, pool, items)
				op.grams[string(key)] = indexes[id]
			}
			id++
		}
	}
	return one(im.emit1(op, in[0]))
}
