package tokenizer

// A postProcessor adds the special tokens a model expects around one
// sequence or a pair (tokenizer.json's "post_processor").
type postProcessor interface {
	// process returns the ids and their type ids; b is nil for a single
	// sequence. Without addSpecial only the type ids are assigned.
	process(a, b []int, addSpecial bool) (ids, types []int)
}

// templateItem is one element of a template: a sequence (A or B) or a
// special token's ids.
type templateItem struct {
	sequence int // 0: A, 1: B, -1: special token
	special  []int
	typeID   int
}

type templateProcessor struct {
	single, pair []templateItem
}

func (t *templateProcessor) process(a, b []int, addSpecial bool) (ids, types []int) {
	items := t.single
	if b != nil {
		items = t.pair
	}
	for _, it := range items {
		var add []int
		switch it.sequence {
		case 0:
			add = a
		case 1:
			add = b
		default:
			if !addSpecial {
				continue
			}
			add = it.special
		}
		ids = append(ids, add...)
		for range add {
			types = append(types, it.typeID)
		}
	}
	return ids, types
}

// bertProcessor is [CLS] A [SEP] (B [SEP]); roberta puts two separators
// between the sequences.
type bertProcessor struct {
	cls, sep int
	roberta  bool
}

func (p *bertProcessor) process(a, b []int, addSpecial bool) (ids, types []int) {
	if !addSpecial {
		return identityProcessor{}.process(a, b, false)
	}
	ids = append(append(append(ids, p.cls), a...), p.sep)
	types = make([]int, len(ids))
	if b == nil {
		return ids, types
	}
	second := 1
	if p.roberta {
		ids = append(ids, p.sep)
		types = append(types, 0)
		second = 0
	}
	ids = append(append(ids, b...), p.sep)
	for len(types) < len(ids) {
		types = append(types, second)
	}
	return ids, types
}

// identityProcessor concatenates the sequences (ByteLevel's processor only
// trims offsets, which ids do not carry).
type identityProcessor struct{}

func (identityProcessor) process(a, b []int, _ bool) (ids, types []int) {
	ids = append(append(ids, a...), b...)
	types = make([]int, len(ids))
	for i := len(a); i < len(ids); i++ {
		types[i] = 1
	}
	return ids, types
}

type processorSequence []postProcessor

func (seq processorSequence) process(a, b []int, addSpecial bool) (ids, types []int) {
	// The Rust library runs each processor on the encodings the previous
	// one produced; with ids only, the template-adding processor is the
	// one that matters and the others are identities.
	for _, p := range seq {
		if _, ok := p.(identityProcessor); ok {
			continue
		}
		return p.process(a, b, addSpecial)
	}
	return identityProcessor{}.process(a, b, addSpecial)
}
