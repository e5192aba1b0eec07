package ir

import (
	"fmt"
	"strings"
)

// InputRole says what a language model's input is for, as dstune feeds it
// when training, generating or serving: the caller gives the tokens (and
// usually the attention mask); the rest has a value dstune can derive.
type InputRole uint8

const (
	// RoleOther is an input dstune cannot derive: the caller binds it.
	RoleOther InputRole = iota
	// RoleTokens is the token ids [batch, sequence] (input_ids, tokens).
	RoleTokens
	// RoleAttentionMask is 1 for real tokens and 0 for padding
	// [batch, past + sequence].
	RoleAttentionMask
	// RolePositionIDs is each token's position [batch, sequence]:
	// PositionIDs derives it from the attention mask as Hugging Face does.
	RolePositionIDs
	// RoleTokenTypeIDs is BERT's segment ids [batch, sequence]: zeros.
	RoleTokenTypeIDs
	// RolePast is a key/value cache input of a "with past" decoder
	// (past_key_values.N.key, ...): bound empty along its past axis, so
	// the model sees no earlier tokens.
	RolePast
	// RoleCacheBranch is the bool switch of a merged decoder
	// (use_cache_branch): bound to false, which selects the branch that
	// reads no cache.
	RoleCacheBranch
)

var roleNames = [...]string{"other", "tokens", "attention mask", "position ids", "token type ids", "past key/value", "cache branch"}

func (r InputRole) String() string { return roleNames[r] }

// InputPlan is one model input with its role; for RolePast, PastAxis is
// the dimension that holds the past length (bound to 0).
type InputPlan struct {
	Input    InputInfo
	Role     InputRole
	PastAxis int
}

// InputPlans assigns a role to every input of m: integer inputs by name
// (a "mask" is the attention mask, "position" the position ids,
// "token_type" or "segment" the token types, the first other one the
// tokens), float inputs named past… as cache inputs, a bool input named
// use_cache… as a merged decoder's switch. It fails only on a cache input
// whose past axis cannot be told (not exactly one dynamic dimension
// besides the batch's).
func (m *Model) InputPlans() ([]InputPlan, error) {
	plans := make([]InputPlan, len(m.Inputs))
	haveTokens := false
	for i, in := range m.Inputs {
		name := strings.ToLower(in.Name)
		p := InputPlan{Input: in, PastAxis: -1}
		isInt := in.DType.IsInt()
		switch {
		case isInt && strings.Contains(name, "position"):
			p.Role = RolePositionIDs
		case isInt && (strings.Contains(name, "token_type") || strings.Contains(name, "segment")):
			p.Role = RoleTokenTypeIDs
		case isInt && strings.Contains(name, "mask"):
			p.Role = RoleAttentionMask
		case isInt && !haveTokens:
			p.Role, haveTokens = RoleTokens, true
		case in.DType.IsFloat() && strings.HasPrefix(name, "past"):
			axis, err := pastAxis(in, m.Inputs)
			if err != nil {
				return nil, err
			}
			p.Role, p.PastAxis = RolePast, axis
		case in.DType == Bool && strings.HasPrefix(name, "use_cache"):
			p.Role = RoleCacheBranch
		}
		plans[i] = p
	}
	return plans, nil
}

// pastAxis finds the past-length dimension of a cache input: the one
// dynamic dimension that is not the batch (named like the first dimension
// of the token input, or the input's first dimension).
func pastAxis(in InputInfo, inputs []InputInfo) (int, error) {
	if in.Dims == nil {
		return 0, fmt.Errorf("ir: cache input %q declares no shape: cannot tell its past axis", in.Name)
	}
	batchName := ""
	for _, other := range inputs {
		if other.DType.IsInt() && len(other.DimNames) > 0 && other.DimNames[0] != "" {
			batchName = other.DimNames[0]
			break
		}
	}
	axis := -1
	for i, d := range in.Dims {
		if d >= 0 || (batchName != "" && in.DimNames[i] == batchName) || (batchName == "" && i == 0) {
			continue
		}
		if axis >= 0 {
			return 0, fmt.Errorf("ir: cache input %q %v has several dynamic dimensions besides the batch (%q, %q): cannot tell its past axis",
				in.Name, in.DimNames, in.DimNames[axis], in.DimNames[i])
		}
		axis = i
	}
	if axis < 0 {
		return 0, fmt.Errorf("ir: cache input %q has no dynamic dimension for the past length", in.Name)
	}
	return axis, nil
}

// LMBindings binds m's inputs for batch × seq tokens with no past: tokens,
// attention mask, position ids and token types get their shapes (their
// values are fed at run time; see PositionIDs), cache inputs are bound to
// constants empty along the past axis (batch on the batch axis), and a
// merged decoder's switch to false. Inputs of RoleOther are left to the
// caller. It reports what it bound, a line per input, for listings.
func (m *Model) LMBindings(batch, seq int) (Bindings, []string, error) {
	plans, err := m.InputPlans()
	if err != nil {
		return Bindings{}, nil, err
	}
	b := Bindings{Shapes: map[string]Shape{}, Values: map[string]*Tensor{}}
	var notes []string
	for _, p := range plans {
		in := p.Input
		switch p.Role {
		case RoleTokens, RoleAttentionMask, RolePositionIDs, RoleTokenTypeIDs:
			b.Shapes[in.Name] = Shape{batch, seq}
		case RolePast:
			shape := make(Shape, len(in.Dims))
			for i, d := range in.Dims {
				switch {
				case i == p.PastAxis:
					shape[i] = 0
				case d >= 0:
					shape[i] = d
				default:
					shape[i] = batch
				}
			}
			b.Values[in.Name] = NewTensor(in.DType, shape)
			notes = append(notes, fmt.Sprintf("%s: bound empty %s%v (no past tokens)", in.Name, in.DType, shape))
		case RoleCacheBranch:
			t := NewTensor(Bool, Shape{})
			if in.Dims != nil {
				t = NewTensor(Bool, shapeOfOnes(len(in.Dims)))
			}
			b.Values[in.Name] = t
			notes = append(notes, fmt.Sprintf("%s: bound to false (the branch without a cache)", in.Name))
		}
	}
	return b, notes, nil
}

func shapeOfOnes(rank int) Shape {
	s := make(Shape, rank)
	for i := range s {
		s[i] = 1
	}
	return s
}

// PositionIDs fills ids (batch × seq, row-major) from the attention mask
// as Hugging Face's generate does: the running count of real tokens minus
// one, and 1 at padding positions. A nil mask means no padding: 0..seq-1
// in every row.
func PositionIDs(ids, mask []int64, batch, seq int) {
	for b := range batch {
		count := int64(0)
		for t := range seq {
			i := b*seq + t
			switch {
			case mask == nil:
				ids[i] = int64(t)
			case mask[i] == 0:
				ids[i] = 1
			default:
				ids[i] = count
				count++
			}
		}
	}
}
