package ir

import (
	"fmt"
	"slices"
)

// LossKind names a loss that TrainingGraph and LossGraph append to a model.
type LossKind uint8

const (
	// SoftmaxCrossEntropy: the model output holds logits with the classes
	// on the last axis; targets are int64 class indices (the output's shape
	// without the last axis); the loss is the mean over the targets not
	// equal to LossSpec.IgnoreIndex of log Σ exp(logits) − logits[target]
	// (0 when every target is ignored).
	SoftmaxCrossEntropy LossKind = iota
	// MeanSquaredError: targets are floats of the output's shape; the loss
	// is mean((output − target)²) over all elements.
	MeanSquaredError
	// BinaryCrossEntropy: the output holds probabilities in [0, 1], the
	// targets floats of its shape; the loss is PyTorch's BCELoss,
	// −mean(t·max(log p, −100) + (1 − t)·max(log(1 − p), −100)).
	BinaryCrossEntropy
)

var lossNames = [...]string{"softmax-cross-entropy", "mse", "bce"}

func (k LossKind) String() string {
	if int(k) < len(lossNames) {
		return lossNames[k]
	}
	return fmt.Sprintf("LossKind(%d)", uint8(k))
}

// ParseLossKind parses the names printed by LossKind.String.
func ParseLossKind(s string) (LossKind, error) {
	for i, n := range lossNames {
		if n == s {
			return LossKind(i), nil
		}
	}
	return 0, fmt.Errorf("ir: unknown loss %q (want one of %v)", s, lossNames[:])
}

// LossSpec describes the loss appended to a model graph.
type LossSpec struct {
	Kind   LossKind
	Output string // model output holding logits/predictions ("" = the first output)
	// IgnoreIndex: for SoftmaxCrossEntropy, targets equal to it contribute
	// nothing (train.IgnoreIndex = -100). Set it explicitly: the zero value
	// ignores class 0.
	IgnoreIndex int64
}

// The names TrainingGraph and LossGraph give the values they add.
const (
	LossOutput   = "loss"
	TargetsInput = "targets"
)

// LossDenominatorInput names the input WithLossDenominator adds.
const LossDenominatorInput = "loss_denominator"

// WithLossDenominator returns a copy of the training graph tg whose loss
// (its LossOutput, a SoftmaxCELoss's as TrainingGraph's softmax
// cross-entropy is) divides by a new input instead of by the batch's own
// count of targets: a float32 scalar named LossDenominatorInput, after
// tg's inputs. The loss's gradient, which SoftmaxCELoss computes with it,
// and so every gradient of the graph divide by it too. Fed the number of
// targets of all the batches a gradient-accumulation step runs, the
// graph's loss and gradients are the batch's shares of their mean's, to
// be summed as they are: the backward pass starts from the (p − y)/N one
// batch of them all would, which matters where its products round their
// operands (bfloat16). The copy shares tg's parameter storage and
// constants; tg is not changed. ok is false, and the graph nil, when tg's
// loss is not a SoftmaxCELoss's of two inputs.
func WithLossDenominator(tg *Graph) (g *Graph, ok bool, err error) {
	var loss *Value
	for _, o := range tg.Outputs {
		if o.Name == LossOutput {
			loss = o.Value
			break
		}
	}
	if loss == nil || loss.Kind != NodeOutput || loss.Producer == nil {
		return nil, false, nil
	}
	if _, ce := loss.Producer.Op.(*SoftmaxCELoss); !ce || len(loss.Producer.Inputs) != 2 || loss.Producer.Outputs[0] != loss {
		return nil, false, nil
	}
	c, vmap, _ := cloneGraph(tg)
	if builderOn(c).names[LossDenominatorInput] {
		return nil, false, fmt.Errorf("ir: loss denominator: graph %q already has a value named %q", tg.Name, LossDenominatorInput)
	}
	d := &Value{Name: LossDenominatorInput, Type: Type{Float32, Shape{}}, Kind: GraphInput}
	c.Inputs = append(c.Inputs, d)
	n := vmap[loss].Producer
	n.Inputs = append(n.Inputs, d)
	c.relinkUses()
	if err := c.Validate(); err != nil {
		return nil, false, fmt.Errorf("ir: loss denominator: %w", err)
	}
	return c, true, nil
}

// TrainingGraph appends the loss to g and differentiates it with respect
// to the given parameters of g (nil = every float parameter that the loss
// depends on). The result is a new graph whose inputs are g's inputs
// followed by "targets" (SoftmaxCrossEntropy: int64, the logits' shape
// without the class axis — the last axis — e.g. [B,T] for [B,T,V] logits
// or [B] for [B,C]; MSE/BCE: the output's float type and shape), and whose
// outputs are "loss" (a scalar of the output's dtype: the mean over
// non-ignored targets, or over all elements for MSE/BCE) followed by one
// gradient per parameter, in wrt order, named "grad:" + the parameter's
// ONNX name, with the parameter's shape and dtype. g's other outputs are
// not computed.
//
// The new graph's parameters hold the very same tensors as g's (writing
// one updates the other) but are new Param values: a Param records the
// uses of one graph. Tied weights and Identity aliases accumulate into the
// one parameter's gradient. See Grad for how the backward pass is built.
// Before differentiating, GELU subgraphs that exporters spell out in
// primitive ops (½·x·(1 + erf(x/√2)) and the tanh approximation) are
// fused into one Gelu or GeluTanh op, so that their backward is one pass
// and keeps one tensor alive, and multiplications by a constant 1 are
// dropped.
func TrainingGraph(g *Graph, loss LossSpec, wrt []*Param) (*Graph, error) {
	c, lossValue, pmap, err := withLoss(g, loss)
	if err != nil {
		return nil, err
	}
	params, err := mapParams(g, pmap, wrt)
	if err != nil {
		return nil, err
	}
	return differentiate(c, lossValue, LossOutput, params)
}

// LossGraph is TrainingGraph without gradients: its only output is "loss"
// (for validation).
func LossGraph(g *Graph, loss LossSpec) (*Graph, error) { return lossGraph(g, loss, false) }

// LossAndOutputGraph is LossGraph with a second output: the model output
// the loss is taken on (the logits), under its own name, so that a
// validation pass computing a metric from the logits runs the model once.
func LossAndOutputGraph(g *Graph, loss LossSpec) (*Graph, error) { return lossGraph(g, loss, true) }

func lossGraph(g *Graph, loss LossSpec, keepOutput bool) (*Graph, error) {
	c, lossValue, _, err := withLoss(g, loss)
	if err != nil {
		return nil, err
	}
	outs := []Output{{Name: LossOutput, Value: lossValue}}
	if keepOutput {
		outs = append(outs, *lossOutput(c, loss))
	}
	c.Outputs = outs
	c.pruneDead()
	c.relinkUses()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("ir: loss graph: %w", err)
	}
	return c, nil
}

// lossOutput is the output of g the loss is taken on, or nil.
func lossOutput(g *Graph, loss LossSpec) *Output {
	name := loss.Output
	if name == "" && len(g.Outputs) > 0 {
		name = g.Outputs[0].Name
	}
	for i, o := range g.Outputs {
		if o.Name == name {
			return &g.Outputs[i]
		}
	}
	return nil
}

// withLoss clones g and appends the targets input and the loss nodes.
func withLoss(g *Graph, loss LossSpec) (*Graph, *Value, map[*Param]*Param, error) {
	if len(g.Outputs) == 0 {
		return nil, nil, nil, fmt.Errorf("ir: loss: graph %q has no outputs", g.Name)
	}
	name := loss.Output
	if name == "" {
		name = g.Outputs[0].Name
	}
	c, _, pmap := cloneGraph(g)
	fuseForTraining(c)
	o := lossOutput(c, loss)
	if o == nil {
		names := make([]string, len(g.Outputs))
		for i, o := range g.Outputs {
			names[i] = o.Name
		}
		return nil, nil, nil, fmt.Errorf("ir: loss: graph %q has no output %q (outputs: %v)", g.Name, name, names)
	}
	out := o.Value
	if !isFloat(out.DType) {
		return nil, nil, nil, fmt.Errorf("ir: loss: output %q is %v, want a float tensor", name, out.Type)
	}
	b := builderOn(c)
	if b.names[TargetsInput] {
		return nil, nil, nil, fmt.Errorf("ir: loss: graph %q already has a value named %q", g.Name, TargetsInput)
	}
	origin := fmt.Sprintf("%s loss on %q", loss.Kind, name)
	add := func(op Op, in ...*Value) []*Value {
		outs := b.Op(op, in...)
		n := c.Nodes[len(c.Nodes)-1]
		if b.err == nil {
			n.Origin = origin
		}
		return outs
	}
	var lossValue *Value
	switch loss.Kind {
	case SoftmaxCrossEntropy:
		if len(out.Shape) < 1 {
			return nil, nil, nil, fmt.Errorf("ir: loss: output %q is a scalar, softmax cross-entropy wants logits with a class axis", name)
		}
		t := b.Input(TargetsInput, Int64, out.Shape[:len(out.Shape)-1])
		lossValue = add(&SoftmaxCELoss{IgnoreIndex: loss.IgnoreIndex}, out, t)[0]
	case MeanSquaredError:
		t := b.Input(TargetsInput, out.DType, out.Shape)
		diff := add(&Binary{Fn: Sub}, out, t)[0]
		lossValue = add(&Binary{Fn: Mul}, diff, diff)[0]
		if len(out.Shape) > 0 {
			axes := iotaInts(len(out.Shape))
			lossValue = add(&Reduce{Fn: ReduceMean, Axes: axes}, lossValue)[0]
		}
	case BinaryCrossEntropy:
		t := b.Input(TargetsInput, out.DType, out.Shape)
		lossValue = add(&BCELoss{}, out, t)[0]
	default:
		return nil, nil, nil, fmt.Errorf("ir: loss: unknown loss kind %d", loss.Kind)
	}
	if b.err != nil {
		return nil, nil, nil, fmt.Errorf("ir: loss: %w", b.err)
	}
	if lossValue.Shape.Size() != 1 {
		return nil, nil, nil, fmt.Errorf("ir: loss: %s loss of %q has shape %v", loss.Kind, name, lossValue.Shape)
	}
	if len(lossValue.Shape) != 0 {
		lossValue = add(&Reshape{Shape: Shape{}}, lossValue)[0]
	}
	c.Outputs = slices.Clone(c.Outputs)
	return c, lossValue, pmap, nil
}
