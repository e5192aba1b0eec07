package train

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/dstune/dstune/ir"
)

// ModelSourceOptions say what to train in an imported model.
type ModelSourceOptions struct {
	Task Task
	// Trainable is a regular expression on parameter names; "" trains
	// every float parameter the model's output depends on.
	Trainable string
}

// ModelSource builds training and loss graphs of an imported ONNX model
// with ir.TrainingGraph and ir.LossGraph: softmax cross-entropy of the
// first output against next tokens (lm: logits [B, T, V]) or labels
// (classify: logits [B, C]), ignoring IgnoreIndex.
type ModelSource struct {
	model  *ir.Model
	inputs InputNames
	params []*ir.Param
	loss   ir.LossSpec

	// VocabSize (lm) and NumClasses (classify) are the logits' last
	// dimension, for checking data; Batch and SeqLen are the token
	// input's dimensions where the model fixes them (0: any).
	VocabSize, NumClasses int64
	Batch, SeqLen         int

	// padCompare is the node of a classifier that compares its token
	// input with one token id, padID, as Hugging Face's sequence
	// classifiers find the last token of each row before its padding;
	// nil when the graph does no such thing (see PadWarning).
	padCompare *ir.Node
	padID      int64
}

var _ ForwardSource = (*ModelSource)(nil)

// NewModelSource checks that m can be trained for the task and picks its
// trainable parameters.
func NewModelSource(m *ir.Model, opts ModelSourceOptions) (*ModelSource, error) {
	s := &ModelSource{model: m, loss: ir.LossSpec{Kind: ir.SoftmaxCrossEntropy, IgnoreIndex: IgnoreIndex}}
	plans, err := m.InputPlans()
	if err != nil {
		return nil, err
	}
	for _, p := range plans {
		in := p.Input
		var name *string
		switch p.Role {
		case ir.RolePast, ir.RoleCacheBranch:
			continue // bound by ir.LMBindings: no past, the branch without a cache
		case ir.RoleTokens:
			name = &s.inputs.Tokens
		case ir.RoleAttentionMask:
			name = &s.inputs.Mask
		case ir.RolePositionIDs:
			name = &s.inputs.PositionIDs
		case ir.RoleTokenTypeIDs:
			name = &s.inputs.TokenTypeIDs
		}
		if name == nil || *name != "" {
			return nil, fmt.Errorf("input %q (%s): dstune feeds the token ids, an attention mask, position ids and token types (and binds a decoder's past inputs empty); it cannot feed this input", in.Name, in.DType)
		}
		*name = in.Name
		if in.DType != ir.Int64 && in.DType != ir.Int32 {
			return nil, fmt.Errorf("input %q is %s: token, mask, position and token-type inputs must be int64 or int32", in.Name, in.DType)
		}
		if len(in.Dims) != 2 {
			return nil, fmt.Errorf("input %q has %d dimensions, want [batch, sequence]", in.Name, len(in.Dims))
		}
		for i, fixed := range []*int{&s.Batch, &s.SeqLen} {
			if d := in.Dims[i]; d > 0 {
				if *fixed > 0 && *fixed != d {
					return nil, fmt.Errorf("input %q is %v, another input fixes dimension %d at %d", in.Name, in.Dims, i, *fixed)
				}
				*fixed = d
			}
		}
	}
	if s.inputs.Tokens == "" {
		return nil, fmt.Errorf("no integer token input (inputs: %d)", len(m.Inputs))
	}
	if len(m.Outputs) == 0 {
		return nil, fmt.Errorf("the model has no outputs")
	}
	// A small specialization tells the logits' shape and which parameters
	// the output depends on.
	g, err := s.ForwardGraph()
	if err != nil {
		// Not a batch of the run's: the model fails on the smallest.
		var bse *BatchShapeError
		if errors.As(err, &bse) {
			err = fmt.Errorf("the model does not import even for a batch of %d×%d tokens: %w", bse.Shape.B, bse.Shape.T, bse.Err)
		}
		return nil, err
	}
	logits := g.Outputs[0].Value
	switch {
	case opts.Task == TaskLM && len(logits.Shape) == 3:
		s.VocabSize = int64(logits.Shape[2])
	case opts.Task == TaskClassify && len(logits.Shape) == 2:
		s.NumClasses = int64(logits.Shape[1])
	case opts.Task == TaskLM:
		return nil, fmt.Errorf("task lm needs logits [batch, sequence, vocabulary]; output %q is %v", g.Outputs[0].Name, logits.Type)
	default:
		return nil, fmt.Errorf("task classify needs logits [batch, classes]; output %q is %v", g.Outputs[0].Name, logits.Type)
	}
	if !logits.DType.IsFloat() {
		return nil, fmt.Errorf("output %q is %s, want float logits", g.Outputs[0].Name, logits.DType)
	}
	if opts.Task == TaskClassify {
		s.padCompare, s.padID = tokenComparison(g, s.inputs.Tokens)
	}
	var re *regexp.Regexp
	if opts.Trainable != "" {
		if re, err = regexp.Compile(opts.Trainable); err != nil {
			return nil, fmt.Errorf("--trainable: %w", err)
		}
	}
	for i, p := range g.Params {
		switch {
		case re != nil && !re.MatchString(p.Name):
		case re == nil && len(p.Uses) == 0:
			// Nothing reads it: PyTorch would give it no gradient and
			// leave it alone; so does dstune.
		default:
			s.params = append(s.params, m.Params[i])
		}
	}
	if len(s.params) == 0 {
		if re != nil {
			return nil, fmt.Errorf("--trainable %q matches no parameter", opts.Trainable)
		}
		return nil, fmt.Errorf("the model has no float parameters to train")
	}
	return s, nil
}

// tokenComparison finds the one node of g that compares the token input
// (itself, or cast or reshaped) for equality with a constant token id,
// and that id; nil when g compares it with no id or with several.
func tokenComparison(g *ir.Graph, tokens string) (*ir.Node, int64) {
	isTokens := map[*ir.Value]bool{}
	for _, in := range g.Inputs {
		if in.Name == tokens {
			isTokens[in] = true
		}
	}
	var found *ir.Node
	var id int64
	for _, n := range g.Nodes {
		switch op := n.Op.(type) {
		case *ir.Cast, *ir.Reshape, *ir.Copy:
			if isTokens[n.Inputs[0]] {
				isTokens[n.Outputs[0]] = true
			}
		case *ir.Binary:
			if op.Fn != ir.Equal {
				continue
			}
			for i, in := range n.Inputs {
				c := n.Inputs[1-i]
				if !isTokens[in] || c.Kind != ir.ConstValue || c.Const.Len() != 1 || !c.DType.IsInt() {
					continue
				}
				if v := c.Const.Int64At(0); found == nil || v == id {
					found, id = n, v
				} else {
					return nil, 0 // several ids: which one pads is not said
				}
			}
		}
	}
	return found, id
}

// PadWarning warns of padding a classifier with another id than the one
// its graph compares its tokens with: Hugging Face's
// …ForSequenceClassification exports of GPT-2, Llama or Qwen pool each
// row at its last token before the model config's pad_token_id, so
// padded with another id their short rows would count their padding as
// tokens. Others compare with an id for other ends (BART's classifier
// pools at the end-of-sequence token), so this is a warning, not an
// error; "" when there is nothing to say.
func (s *ModelSource) PadWarning(pad int64) string {
	if s.padCompare == nil || pad == s.padID || s.padID < 0 {
		return ""
	}
	return fmt.Sprintf("%s compares the token input %q with id %d: if that is the model's pad_token_id (Hugging Face's sequence classifiers of GPT-2, Llama or Qwen tell padding from tokens so), padding with --pad-id %d makes rows shorter than the batch count their padding as tokens: give --pad-id %d", s.padCompare, s.inputs.Tokens, s.padID, pad, s.padID)
}

func (s *ModelSource) specialize(shape BatchShape) (*ir.Graph, error) {
	b, _, err := s.model.LMBindings(shape.B, shape.T)
	if err != nil {
		return nil, err
	}
	g, err := s.model.Specialize(b)
	if err != nil {
		return nil, &BatchShapeError{Shape: shape, Err: err}
	}
	return g, nil
}

// BatchShapeError is a model that does not import for a batch shape (a
// sequence longer than its positions, say).
type BatchShapeError struct {
	Shape BatchShape
	Err   error
}

func (e *BatchShapeError) Error() string {
	return fmt.Sprintf("import for batch %d×%d: %v", e.Shape.B, e.Shape.T, e.Err)
}

func (e *BatchShapeError) Unwrap() error { return e.Err }

// Params are the trainable parameters.
func (s *ModelSource) Params() []*ir.Param { return s.params }

// Forward specializes the model to shape: the forward graph the training
// and loss graphs are built on.
func (s *ModelSource) Forward(shape BatchShape) (*ir.Graph, error) { return s.specialize(shape) }

// Loss is the loss the training and loss graphs append.
func (s *ModelSource) Loss() ir.LossSpec { return s.loss }

// Inputs name the token and mask inputs.
func (s *ModelSource) Inputs() InputNames { return s.inputs }

// TrainingGraph specializes the model to shape and differentiates the
// loss with respect to the trainable parameters.
func (s *ModelSource) TrainingGraph(shape BatchShape) (*ir.Graph, error) {
	g, err := s.specialize(shape)
	if err != nil {
		return nil, err
	}
	wrt := make([]*ir.Param, len(s.params))
	for i, p := range s.params {
		if wrt[i] = g.Param(p.Name); wrt[i] == nil {
			return nil, fmt.Errorf("parameter %q is missing from the graph", p.Name)
		}
	}
	tg, err := ir.TrainingGraph(g, s.loss, wrt)
	if err != nil {
		return nil, fmt.Errorf("training graph for batch %d×%d: %w", shape.B, shape.T, err)
	}
	return tg, nil
}

// LossGraph specializes the model to shape and appends the loss.
func (s *ModelSource) LossGraph(shape BatchShape) (*ir.Graph, error) {
	g, err := s.specialize(shape)
	if err != nil {
		return nil, err
	}
	lg, err := ir.LossGraph(g, s.loss)
	if err != nil {
		return nil, fmt.Errorf("loss graph for batch %d×%d: %w", shape.B, shape.T, err)
	}
	return lg, nil
}
