package dst

import (
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/dstune/dstune/ir"
)

// Module kinds: what a parameter is in the network, derived from the ops
// that consume it. A parameter's kind is its module kind followed by
// ".weight" or ".bias" (a norm's scale is its weight).
const (
	KindEmbedding     = "embedding"      // the table of a Gather (token, position, type embeddings)
	KindAttnQ         = "attn_q"         // a projection feeding only the queries of an attention
	KindAttnK         = "attn_k"         // ... only the keys
	KindAttnV         = "attn_v"         // ... only the values
	KindAttnQKV       = "attn_qkv"       // a packed projection split into queries, keys and values
	KindAttnKV        = "attn_kv"        // a packed projection split into keys and values
	KindAttnOut       = "attn_out"       // the projection of an attention's output
	KindMLPIn         = "mlp_in"         // a linear layer feeding a nonlinearity that feeds ...
	KindMLPOut        = "mlp_out"        // ... a linear layer added back into the residual stream
	KindAttnNorm      = "attn_norm"      // a norm before (pre-LN) or after (post-LN) an attention
	KindMLPNorm       = "mlp_norm"       // a norm before or after an MLP
	KindEmbeddingNorm = "embedding_norm" // a norm applied to the embeddings (post-LN models)
	KindFinalNorm     = "final_norm"     // a norm feeding the head
	KindNorm          = "norm"           // any other normalization
	KindHead          = "head"           // a linear layer after the layer stack: LM head, pooler, classifier
	KindLinear        = "linear"         // any other MatMul/Gemm weight (plain MLPs)
	KindConv          = "conv"           // a convolution
	KindOther         = "other"          // anything else
	KindUnused        = "unused"         // a parameter nothing reads
)

// stackedKinds are the kinds that repeat once per layer of the stack.
var stackedKinds = map[string]bool{
	KindAttnQ: true, KindAttnK: true, KindAttnV: true, KindAttnQKV: true, KindAttnKV: true,
	KindAttnOut: true, KindMLPIn: true, KindMLPOut: true, KindAttnNorm: true, KindMLPNorm: true,
	KindLinear: true, KindConv: true,
}

// Module says what one parameter is: its kind ("attn_qkv.weight") and
// its layer, the index of its module among the modules of the same kind
// in topological order, divided by the number of such modules per layer
// (the stack has as many layers as its rarest stacked kind has modules;
// -1 for the kinds outside the layer stack:
// embeddings, their norm, the final norm, the head; and for a parameter
// shared by several modules). NameLayer is the
// layer number the parameter's name carries ("h.3.mlp_fc.weight" → 3; -1
// when it has none), a hint that the graph-derived Layer is checked
// against. Shared is set for a parameter that several modules read
// (tied embeddings, deduplicated initializers); its kind and layer are
// those of its first use.
type Module struct {
	Kind      string
	Layer     int
	NameLayer int
	Shared    bool
}

// Modules classifies the parameters of g (a forward graph specialized to
// some input shape) by the ops that consume them; the rules are in the
// README's DST section. Every parameter of g gets an entry.
//
//   - A Gather's table is an embedding. A LayerNormalization's scale and
//     bias, and the scale and bias of a decomposed norm (a Mul and Add
//     after a division by the square root of a mean), are norm weight and
//     bias.
//   - A MatMul or Gemm operand that is a parameter (through Transpose,
//     Reshape, Slice and the like) is a linear layer's weight; a
//     parameter added to its output (or Gemm's C) is its bias.
//   - An attention is a Softmax between two MatMuls of activations. The
//     linear layers whose outputs reach its queries, keys or values
//     (through reshapes, splits and scaling) are attn_q, attn_k, attn_v
//     or, when one reaches several, attn_qkv / attn_kv. The linear layer
//     whose input comes from an attention's output is attn_out.
//   - A linear layer whose output, through element-wise ops including a
//     nonlinearity (or a product with another activation, the gate of a
//     gated MLP), is the input of another linear layer whose output is
//     added to an activation (a residual) is mlp_in, the other mlp_out.
//   - Other linear layers are head when the graph has attention and they
//     come after the last attention, or when nothing but element-wise
//     ops lie between them and a graph output; else linear.
//   - A norm whose output is also added to an activation is a post-norm,
//     named by what its input comes from (attn_out → attn_norm, mlp_out →
//     mlp_norm, embeddings → embedding_norm); otherwise a pre-norm, named
//     by what its output feeds (an attention projection → attn_norm,
//     mlp_in → mlp_norm, the head or an output → final_norm).
func Modules(g *ir.Graph) map[string]Module {
	a := newGraphAnalysis(g)
	a.findAttention()
	a.findLinears()
	a.classifyLinears()
	a.findNorms()
	a.classifyNorms()
	return a.result()
}

// graphAnalysis holds the derived facts about one graph.
type graphAnalysis struct {
	g         *ir.Graph
	order     map[*ir.Node]int
	consumers map[*ir.Value][]ir.Use
	outputs   map[*ir.Value]bool

	cores      []attentionCore
	norms      []normInstance
	coreOut    map[*ir.Value]bool
	linears    []*linearLayer
	byOutput   map[*ir.Value]*linearLayer // the linear whose (biased) output a value is
	byNode     map[*ir.Node]*linearLayer
	kindOf     map[*ir.Param]string // kinds found so far, by first use
	firstUseAt map[*ir.Param]int    // topological index of the node that gave the kind
}

// attentionCore is Softmax(MatMul(q, k)) feeding MatMul(·, v).
type attentionCore struct {
	q, k, v, out *ir.Value
	at           int // the Softmax's topological index
}

// linearLayer is a MatMul/Gemm/Einsum with a parameter operand.
type linearLayer struct {
	node    *ir.Node
	weight  *ir.Param
	bias    *ir.Param
	in, out *ir.Value // the activation operand; the output after the bias
	kind    string
	roles   map[string]bool // q, k, v: attention inputs the output reaches
}

func newGraphAnalysis(g *ir.Graph) *graphAnalysis {
	a := &graphAnalysis{g: g, order: map[*ir.Node]int{}, consumers: map[*ir.Value][]ir.Use{}, outputs: map[*ir.Value]bool{},
		coreOut: map[*ir.Value]bool{}, byOutput: map[*ir.Value]*linearLayer{}, byNode: map[*ir.Node]*linearLayer{}, kindOf: map[*ir.Param]string{}, firstUseAt: map[*ir.Param]int{}}
	for i, n := range g.Nodes {
		a.order[n] = i
		for j, v := range n.Inputs {
			if v != nil {
				a.consumers[v] = append(a.consumers[v], ir.Use{Node: n, Input: j})
			}
		}
	}
	for _, o := range g.Outputs {
		a.outputs[o.Value] = true
	}
	return a
}

// isActivation reports whether v is computed from the graph's inputs (not
// a parameter or a constant).
func isActivation(v *ir.Value) bool {
	return v != nil && (v.Kind == ir.NodeOutput || v.Kind == ir.GraphInput)
}

// isPlumbing reports ops that move a tensor's entries without changing
// them: a value keeps its identity through them (its data input is input 0).
func isPlumbing(op ir.Op) bool {
	switch op.(type) {
	case *ir.Reshape, *ir.Transpose, *ir.Copy, *ir.Cast, *ir.Expand, *ir.Slice, *ir.Split:
		return true
	}
	return false
}

func binaryFn(n *ir.Node) (ir.BinaryFn, bool) {
	if b, ok := n.Op.(*ir.Binary); ok {
		return b.Fn, true
	}
	return 0, false
}

// paramOf traces v back through plumbing to a parameter, or nil.
func paramOf(v *ir.Value) *ir.Param {
	for v != nil {
		switch v.Kind {
		case ir.ParamValue:
			return v.Param
		case ir.NodeOutput:
			if !isPlumbing(v.Producer.Op) || len(v.Producer.Inputs) == 0 {
				return nil
			}
			v = v.Producer.Inputs[0]
		default:
			return nil
		}
	}
	return nil
}

// isConstLike reports a value that does not depend on the graph inputs
// or the parameters.
func isConstLike(v *ir.Value) bool { return v != nil && v.Kind == ir.ConstValue }

func isDropout(n *ir.Node) bool { _, ok := n.Op.(*ir.Dropout); return ok }

func backOnlyPlumbing(v *ir.Value) *ir.Value {
	for v != nil && v.Kind == ir.NodeOutput && isPlumbing(v.Producer.Op) {
		v = v.Producer.Inputs[0]
	}
	return v
}

// maxTrace bounds the backward walks (a few ops lie between an
// attention's product and its Softmax).
const maxTrace = 32

// productBehind walks back from v through plumbing, dropout, scaling and
// masking (element-wise ops and Where) to the one product of two
// activations it comes from, or nil when there is none or more than one.
func productBehind(v *ir.Value, depth int) *ir.Node {
	for ; depth > 0 && v != nil && v.Kind == ir.NodeOutput; depth-- {
		n := v.Producer
		if activationProduct(n) {
			return n
		}
		if isPlumbing(n.Op) || isDropout(n) {
			v = n.Inputs[0]
			continue
		}
		var operands []*ir.Value
		if fn, ok := binaryFn(n); ok && (fn == ir.Add || fn == ir.Sub || fn == ir.Mul || fn == ir.Div) {
			operands = n.Inputs
		} else if _, ok := n.Op.(*ir.Where); ok && len(n.Inputs) == 3 {
			operands = n.Inputs[1:]
		} else {
			return nil
		}
		var found *ir.Node
		for _, o := range operands {
			if !isActivation(o) {
				continue
			}
			if p := productBehind(o, depth-1); p != nil {
				if found != nil && p != found {
					return nil
				}
				found = p
			}
		}
		return found
	}
	return nil
}

// activationProduct reports whether n multiplies two activations (no
// parameter operand): the score and value products of an attention.
func activationProduct(n *ir.Node) bool {
	switch n.Op.(type) {
	case *ir.MatMul, *ir.Einsum:
	default:
		return false
	}
	if len(n.Inputs) != 2 {
		return false
	}
	return isActivation(n.Inputs[0]) && isActivation(n.Inputs[1]) && paramOf(n.Inputs[0]) == nil && paramOf(n.Inputs[1]) == nil
}

// findAttention finds every Softmax between two products of activations.
func (a *graphAnalysis) findAttention() {
	for i, n := range a.g.Nodes {
		if _, ok := n.Op.(*ir.Softmax); !ok || n.Outputs[0] == nil {
			continue
		}
		qk := productBehind(n.Inputs[0], maxTrace)
		if qk == nil {
			continue
		}
		// Forward from the probabilities to the product with the values.
		var pv *ir.Node
		var probs *ir.Value
		frontier := []*ir.Value{n.Outputs[0]}
		for len(frontier) > 0 && pv == nil {
			v := frontier[0]
			frontier = frontier[1:]
			for _, u := range a.consumers[v] {
				switch {
				case activationProduct(u.Node):
					pv, probs = u.Node, v
				case isPlumbing(u.Node.Op) || isDropout(u.Node):
					if u.Input == 0 && u.Node.Outputs[0] != nil {
						frontier = append(frontier, u.Node.Outputs[0])
					}
				}
			}
		}
		if pv == nil {
			continue
		}
		vIn := pv.Inputs[1]
		if pv.Inputs[1] == probs {
			vIn = pv.Inputs[0]
		}
		a.cores = append(a.cores, attentionCore{q: qk.Inputs[0], k: qk.Inputs[1], v: vIn, out: pv.Outputs[0], at: i})
		a.coreOut[pv.Outputs[0]] = true
	}
}

// findLinears records every product with a parameter operand, its bias
// and its output after the bias.
func (a *graphAnalysis) findLinears() {
	for i, n := range a.g.Nodes {
		var weight *ir.Param
		var in *ir.Value
		switch n.Op.(type) {
		case *ir.MatMul, *ir.Gemm, *ir.Einsum:
			if len(n.Inputs) < 2 {
				continue
			}
			p0, p1 := paramOf(n.Inputs[0]), paramOf(n.Inputs[1])
			switch {
			case p1 != nil && p0 == nil:
				weight, in = p1, n.Inputs[0]
			case p0 != nil && p1 == nil:
				weight, in = p0, n.Inputs[1]
			default:
				continue
			}
		case *ir.Conv:
			if p := paramOf(n.Inputs[1]); p != nil {
				a.note(p, KindConv+".weight", i)
				if len(n.Inputs) > 2 {
					if b := paramOf(n.Inputs[2]); b != nil {
						a.note(b, KindConv+".bias", i)
					}
				}
			}
			continue
		default:
			continue
		}
		l := &linearLayer{node: n, weight: weight, in: in, out: n.Outputs[0], roles: map[string]bool{}}
		if _, ok := n.Op.(*ir.Gemm); ok && len(n.Inputs) > 2 {
			l.bias = paramOf(n.Inputs[2])
		}
		if l.bias == nil && l.out != nil {
			for _, u := range a.consumers[l.out] {
				if fn, ok := binaryFn(u.Node); ok && fn == ir.Add {
					if b := paramOf(u.Node.Inputs[1-u.Input]); b != nil {
						l.bias, l.out = b, u.Node.Outputs[0]
						break
					}
				}
			}
		}
		a.linears = append(a.linears, l)
		a.byNode[n] = l
		if l.out != nil {
			a.byOutput[l.out] = l
		}
	}
}

// linearBehind walks back from v through plumbing, constant scaling and
// bias additions to the linear layer that computed it, or nil.
func (a *graphAnalysis) linearBehind(v *ir.Value) *linearLayer {
	for v != nil {
		if l := a.byOutput[v]; l != nil {
			return l
		}
		if v.Kind != ir.NodeOutput {
			return nil
		}
		n := v.Producer
		if l := a.byNode[n]; l != nil {
			return l
		}
		if isPlumbing(n.Op) || isDropout(n) {
			v = n.Inputs[0]
			continue
		}
		if fn, ok := binaryFn(n); ok && (fn == ir.Mul || fn == ir.Div || fn == ir.Add || fn == ir.Sub) {
			x, y := n.Inputs[0], n.Inputs[1]
			switch {
			case isActivation(x) && !isActivation(y):
				v = x
				continue
			case isActivation(y) && !isActivation(x) && fn != ir.Div && fn != ir.Sub:
				v = y
				continue
			}
		}
		return a.rotaryLinearBehind(v)
	}
	return nil
}

// rotaryLinearBehind finds the one linear layer behind v when v mixes it
// with other activations that come from no linear layer: rotary position
// embeddings computed in the graph, x·cos + rotate_half(x)·sin, where cos
// and sin are computed from position ids and rotate_half concatenates
// negated halves of x (or, as llama2.c rotates adjacent pairs, the even
// and odd entries are gathered, rotated and interleaved again). It returns nil when no linear layer or more than
// one lies behind v.
func (a *graphAnalysis) rotaryLinearBehind(v *ir.Value) *linearLayer {
	var found *linearLayer
	seen := map[*ir.Value]bool{}
	budget := 256 // values visited: bounds the walk on any graph
	var walk func(v *ir.Value, depth int) bool
	walk = func(v *ir.Value, depth int) bool {
		if v == nil || !isActivation(v) || seen[v] {
			return true
		}
		seen[v] = true
		if budget--; budget < 0 || depth == 0 {
			return false
		}
		l := a.byOutput[v]
		if l == nil && v.Kind == ir.NodeOutput {
			l = a.byNode[v.Producer]
		}
		if l != nil {
			if found != nil && found != l {
				return false
			}
			found = l
			return true
		}
		if v.Kind != ir.NodeOutput {
			return true // a graph input (position ids): no linear layer behind it
		}
		n := v.Producer
		var operands []*ir.Value
		switch op := n.Op.(type) {
		case *ir.Binary, *ir.Concat:
			operands = n.Inputs
		case *ir.Unary:
			if op.Fn != ir.Neg && op.Fn != ir.Cos && op.Fn != ir.Sin {
				return false
			}
			operands = n.Inputs
		case *ir.Where:
			operands = n.Inputs[1:]
		case *ir.Gather:
			// llama2.c's rotary embedding takes the even and odd entries
			// of each pair with a Gather of constant indices.
			if !isConstLike(n.Inputs[1]) {
				return false
			}
			operands = n.Inputs[:1]
		default:
			if !isPlumbing(n.Op) && !isDropout(n) {
				return false
			}
			operands = n.Inputs[:1]
		}
		for _, o := range operands {
			if !walk(o, depth-1) {
				return false
			}
		}
		return true
	}
	if !walk(v, maxTrace) {
		return nil
	}
	return found
}

func (a *graphAnalysis) classifyLinears() {
	for _, c := range a.cores {
		for role, v := range map[string]*ir.Value{"q": c.q, "k": c.k, "v": c.v} {
			if l := a.linearBehind(v); l != nil {
				l.roles[role] = true
			}
		}
	}
	lastCore := -1
	for _, c := range a.cores {
		lastCore = max(lastCore, c.at)
	}
	mlpIn, mlpOut := a.findMLPs()
	for _, l := range a.linears {
		switch {
		case len(l.roles) > 0:
			l.kind = projectionKind(l.roles)
		case a.comesFromAttention(l.in):
			l.kind = KindAttnOut
		case mlpIn[l]:
			l.kind = KindMLPIn
		case mlpOut[l]:
			l.kind = KindMLPOut
		case lastCore >= 0 && a.order[l.node] > lastCore, a.reachesOutput(l.out):
			l.kind = KindHead
		default:
			l.kind = KindLinear
		}
		at := a.order[l.node]
		a.note(l.weight, l.kind+".weight", at)
		if l.bias != nil {
			a.note(l.bias, l.kind+".bias", at)
		}
	}
}

func projectionKind(roles map[string]bool) string {
	switch {
	case roles["q"] && roles["k"] && roles["v"]:
		return KindAttnQKV
	case roles["k"] && roles["v"]:
		return KindAttnKV
	case roles["q"] && len(roles) == 1:
		return KindAttnQ
	case roles["k"] && len(roles) == 1:
		return KindAttnK
	case roles["v"] && len(roles) == 1:
		return KindAttnV
	}
	return KindAttnQKV // q with k or v only: still a packed projection
}

// comesFromAttention reports whether v is an attention's output moved by
// plumbing only.
func (a *graphAnalysis) comesFromAttention(v *ir.Value) bool {
	return a.coreOut[backOnlyPlumbing(v)]
}

// isNonlinearity reports the activation functions an MLP applies: the
// element-wise functions ONNX's activations import as (Selu as Elu
// scaled), and Clip with a bound (HardSigmoid, ReLU6).
func isNonlinearity(n *ir.Node) bool {
	switch op := n.Op.(type) {
	case *ir.Unary:
		switch op.Fn {
		case ir.Tanh, ir.Sigmoid, ir.Relu, ir.Erf, ir.LeakyRelu, ir.Elu, ir.Gelu, ir.GeluTanh, ir.Softplus,
			ir.HardSwish, ir.Mish, ir.Swish, ir.Celu, ir.Softsign, ir.ThresholdedRelu:
			return true
		}
	case *ir.Clip:
		return len(n.Inputs) > 1 && slices.ContainsFunc(n.Inputs[1:], func(v *ir.Value) bool { return v != nil })
	}
	return false
}

// isElementwise reports ops an MLP's activation is built of.
func isElementwise(n *ir.Node) bool {
	switch n.Op.(type) {
	case *ir.Unary, *ir.Binary, *ir.Clip:
		return true
	}
	return isPlumbing(n.Op) || isDropout(n)
}

// findMLPs finds pairs of linear layers joined by element-wise ops with a
// nonlinearity, the second of which feeds a residual addition.
func (a *graphAnalysis) findMLPs() (in, out map[*linearLayer]bool) {
	in, out = map[*linearLayer]bool{}, map[*linearLayer]bool{}
	byInput := map[*ir.Value][]*linearLayer{}
	for _, l := range a.linears {
		byInput[l.in] = append(byInput[l.in], l)
	}
	for _, l := range a.linears {
		if l.out == nil {
			continue
		}
		// reached[v] is true when v derives from l's output element-wise,
		// through a nonlinearity.
		reached := map[*ir.Value]bool{l.out: false}
		start := a.order[l.out.Producer]
		for _, n := range a.g.Nodes[start+1:] {
			if !isElementwise(n) || n.Outputs[0] == nil {
				continue
			}
			derived, nonlinear, foreign := false, isNonlinearity(n), false
			for _, v := range n.Inputs {
				if v == nil {
					continue
				}
				if nl, ok := reached[v]; ok {
					derived = true
					nonlinear = nonlinear || nl
				} else if isActivation(v) {
					foreign = true
				}
			}
			if !derived {
				continue
			}
			if fn, ok := binaryFn(n); ok && foreign {
				if fn != ir.Mul {
					continue // an addition of another activation: a residual, not the MLP
				}
				nonlinear = true // a product of two activations: the gate of a gated MLP
			}
			for _, o := range n.Outputs {
				if o != nil {
					reached[o] = nonlinear
				}
			}
		}
		for v, nonlinear := range reached {
			if !nonlinear {
				continue
			}
			for _, l2 := range byInput[v] {
				if l2 != l && a.feedsResidual(l2.out) {
					in[l], out[l2] = true, true
				}
			}
		}
	}
	return in, out
}

// feedsResidual reports whether v (through plumbing) is added to another
// activation.
func (a *graphAnalysis) feedsResidual(v *ir.Value) bool {
	frontier := []*ir.Value{v}
	for len(frontier) > 0 {
		v := frontier[0]
		frontier = frontier[1:]
		for _, u := range a.consumers[v] {
			if fn, ok := binaryFn(u.Node); ok && fn == ir.Add && isActivation(u.Node.Inputs[1-u.Input]) {
				return true
			}
			if (isPlumbing(u.Node.Op) || isDropout(u.Node)) && u.Input == 0 && u.Node.Outputs[0] != nil {
				frontier = append(frontier, u.Node.Outputs[0])
			}
		}
	}
	return false
}

// reachesOutput reports whether v reaches a graph output through
// element-wise ops and plumbing only.
func (a *graphAnalysis) reachesOutput(v *ir.Value) bool {
	seen := map[*ir.Value]bool{}
	frontier := []*ir.Value{v}
	for len(frontier) > 0 {
		v := frontier[0]
		frontier = frontier[1:]
		if v == nil || seen[v] {
			continue
		}
		seen[v] = true
		if a.outputs[v] {
			return true
		}
		for _, u := range a.consumers[v] {
			if isElementwise(u.Node) || isSoftmax(u.Node) {
				frontier = append(frontier, u.Node.Outputs...)
			}
		}
	}
	return false
}

func isSoftmax(n *ir.Node) bool { _, ok := n.Op.(*ir.Softmax); return ok }

// normInstance is one normalization: its scale and bias parameters, its
// input and its output (after the bias).
type normInstance struct {
	scale, bias *ir.Param
	in, out     *ir.Value
	at          int
}

// findNorms finds LayerNormalization nodes and decomposed norms (a
// division by the square root of a mean, then a Mul and an Add with
// parameters), and classifies Gather tables as embeddings.
func (a *graphAnalysis) findNorms() {
	for i, n := range a.g.Nodes {
		switch op := n.Op.(type) {
		case *ir.Gather:
			if p := paramOf(n.Inputs[0]); p != nil {
				a.note(p, KindEmbedding+".weight", i)
			}
		case *ir.LayerNorm:
			ni := normInstance{in: n.Inputs[0], out: n.Outputs[0], at: i}
			if len(n.Inputs) > 1 {
				ni.scale = paramOf(n.Inputs[1])
			}
			if len(n.Inputs) > 2 {
				ni.bias = paramOf(n.Inputs[2])
			}
			a.noteNorm(ni)
		case *ir.BatchNorm:
			for j, suffix := range []string{"", ".weight", ".bias", ".running_mean", ".running_var"} {
				if j > 0 && j < len(n.Inputs) {
					if p := paramOf(n.Inputs[j]); p != nil {
						a.note(p, KindNorm+suffix, i)
					}
				}
			}
		case *ir.Binary:
			if op.Fn != ir.Mul {
				continue
			}
			for j := range 2 {
				p := paramOf(n.Inputs[j])
				x := n.Inputs[1-j]
				if p == nil || !isActivation(x) {
					continue
				}
				src, ok := normalizedSource(x)
				if !ok {
					continue
				}
				ni := normInstance{scale: p, in: src, out: n.Outputs[0], at: i}
				for _, u := range a.consumers[n.Outputs[0]] {
					if fn, ok := binaryFn(u.Node); ok && fn == ir.Add {
						if b := paramOf(u.Node.Inputs[1-u.Input]); b != nil {
							ni.bias, ni.out = b, u.Node.Outputs[0]
						}
					}
				}
				a.noteNorm(ni)
			}
		}
	}
}

// normalizedSource reports whether v is x normalized by the square root
// of a mean ((x−mean)/sqrt(var+eps), or x·1/sqrt(...)), and returns x.
func normalizedSource(v *ir.Value) (*ir.Value, bool) {
	v = backOnlyPlumbing(v)
	if v == nil || v.Kind != ir.NodeOutput {
		return nil, false
	}
	fn, ok := binaryFn(v.Producer)
	if !ok || (fn != ir.Div && fn != ir.Mul) {
		return nil, false
	}
	num, den := v.Producer.Inputs[0], v.Producer.Inputs[1]
	if fn == ir.Mul && isRootOfMean(num, true) {
		num, den = den, num
	}
	if !isRootOfMean(den, fn == ir.Mul) {
		return nil, false
	}
	// num is x − mean(x) (LayerNorm) or x itself (RMSNorm).
	if src := backOnlyPlumbing(num); src != nil && src.Kind == ir.NodeOutput {
		if f, ok := binaryFn(src.Producer); ok && f == ir.Sub {
			return src.Producer.Inputs[0], true
		}
	}
	return num, true
}

// isRootOfMean reports whether v is sqrt(mean(·)+c) (or its reciprocal
// when reciprocal is set), through plumbing and constant additions.
func isRootOfMean(v *ir.Value, reciprocal bool) bool {
	v = backOnlyPlumbing(v)
	if reciprocal {
		if v == nil || v.Kind != ir.NodeOutput {
			return false
		}
		u, ok := v.Producer.Op.(*ir.Unary)
		if !ok || u.Fn != ir.Reciprocal {
			return false
		}
		v = backOnlyPlumbing(v.Producer.Inputs[0])
	}
	if v == nil || v.Kind != ir.NodeOutput {
		return false
	}
	u, ok := v.Producer.Op.(*ir.Unary)
	if !ok || u.Fn != ir.Sqrt {
		return false
	}
	v = backOnlyPlumbing(v.Producer.Inputs[0])
	for v != nil && v.Kind == ir.NodeOutput {
		switch op := v.Producer.Op.(type) {
		case *ir.Reduce:
			return op.Fn == ir.ReduceMean
		case *ir.Binary:
			if op.Fn != ir.Add {
				return false
			}
			x, y := v.Producer.Inputs[0], v.Producer.Inputs[1]
			if isConstLike(x) {
				v = backOnlyPlumbing(y)
			} else {
				v = backOnlyPlumbing(x)
			}
		default:
			return false
		}
	}
	return false
}

// noteNorm records a norm found in the graph; classifyNorms names it.
func (a *graphAnalysis) noteNorm(ni normInstance) { a.norms = append(a.norms, ni) }

// classifyNorms names the norms by their place (see Modules). The model
// is post-LN when a norm after a residual addition of an attention or MLP
// output feeds a residual addition itself; its norms are then named by
// their input (the last one feeds the head, not a residual), a pre-LN
// model's by their output. A norm of the embeddings whose output is the
// residual stream is embedding_norm either way.
func (a *graphAnalysis) classifyNorms() {
	postLN := false
	for _, ni := range a.norms {
		if a.residualBefore(ni) != "" && ni.out != nil && a.feedsResidual(ni.out) {
			postLN = true
		}
	}
	for _, ni := range a.norms {
		kind := ""
		if postLN {
			kind = a.residualBefore(ni)
		}
		if kind == "" && a.fromEmbeddings(ni.in) && ni.out != nil && a.feedsResidual(ni.out) {
			kind = KindEmbeddingNorm
		}
		if kind == "" {
			kind = a.normByOutput(ni)
		}
		if ni.scale != nil {
			a.note(ni.scale, kind+".weight", ni.at)
		}
		if ni.bias != nil {
			a.note(ni.bias, kind+".bias", ni.at)
		}
	}
}

// residualBefore names the norm by the module its input's residual
// addition adds (attn_out → attn_norm, mlp_out → mlp_norm), or "".
func (a *graphAnalysis) residualBefore(ni normInstance) string {
	add := backOnlyPlumbing(ni.in)
	if add == nil || add.Kind != ir.NodeOutput {
		return ""
	}
	if fn, ok := binaryFn(add.Producer); !ok || fn != ir.Add {
		return ""
	}
	for _, operand := range add.Producer.Inputs {
		if l := a.linearBehind(operand); l != nil {
			switch l.kind {
			case KindAttnOut:
				return KindAttnNorm
			case KindMLPOut:
				return KindMLPNorm
			}
		}
	}
	return ""
}

// normByOutput names a pre-norm by the first modules it feeds.
func (a *graphAnalysis) normByOutput(ni normInstance) string {
	// Pre-norm: named by the first modules it feeds.
	frontier := []*ir.Value{ni.out}
	seen := map[*ir.Value]bool{}
	for len(frontier) > 0 {
		v := frontier[0]
		frontier = frontier[1:]
		if v == nil || seen[v] {
			continue
		}
		seen[v] = true
		if a.outputs[v] {
			return KindFinalNorm
		}
		for _, u := range a.consumers[v] {
			if l := a.byNode[u.Node]; l != nil {
				switch {
				case len(l.roles) > 0:
					return KindAttnNorm
				case l.kind == KindMLPIn:
					return KindMLPNorm
				case l.kind == KindHead:
					return KindFinalNorm
				}
			}
			if isPlumbing(u.Node.Op) || isDropout(u.Node) {
				frontier = append(frontier, u.Node.Outputs...)
			}
			if _, ok := u.Node.Op.(*ir.Gather); ok {
				frontier = append(frontier, u.Node.Outputs...) // the pooler's first token
			}
		}
	}
	return KindNorm
}

// fromEmbeddings reports whether v is (a sum of) embedding lookups.
func (a *graphAnalysis) fromEmbeddings(v *ir.Value) bool {
	v = backOnlyPlumbing(v)
	if v == nil || v.Kind != ir.NodeOutput {
		return false
	}
	n := v.Producer
	if _, ok := n.Op.(*ir.Gather); ok {
		return paramOf(n.Inputs[0]) != nil
	}
	if fn, ok := binaryFn(n); ok && fn == ir.Add {
		return a.fromEmbeddings(n.Inputs[0]) || a.fromEmbeddings(n.Inputs[1])
	}
	return false
}

// note records a kind for p unless an earlier use already gave one.
func (a *graphAnalysis) note(p *ir.Param, kind string, at int) {
	if prev, ok := a.firstUseAt[p]; ok && prev <= at {
		return
	}
	a.kindOf[p], a.firstUseAt[p] = kind, at
}

// layerInName finds the layer number in names like "h.3.attn",
// "encoder.layers.3.x", "blocks_3_mlp": the first all-digit component.
var layerInName = regexp.MustCompile(`(?:^|[._/:-])(\d+)(?:[._/:-]|$)`)

func nameLayer(name string) int {
	if strings.HasPrefix(name, "onnx::") {
		return -1 // a name the exporter made up from a node's output
	}
	m := layerInName.FindStringSubmatch(name)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return n
}

// result assigns kinds to every parameter and numbers the layers: the
// modules of one stacked kind, in topological order of their first use,
// are layers 0, 1, … (or 0, 0, 1, 1, … for a kind with two modules per
// layer).
func (a *graphAnalysis) result() map[string]Module {
	out := make(map[string]Module, len(a.g.Params))
	type entry struct {
		p  *ir.Param
		at int
	}
	byKind := map[string][]entry{}
	for _, p := range a.g.Params {
		kind, ok := a.kindOf[p]
		switch {
		case len(p.Uses) == 0:
			kind = KindUnused + ".weight"
		case !ok:
			kind = KindOther + ".weight"
		}
		shared := len(p.Uses) > 1
		out[p.Name] = Module{Kind: kind, Layer: -1, NameLayer: nameLayer(p.Name), Shared: shared}
		if ok && !shared {
			byKind[kind] = append(byKind[kind], entry{p, a.firstUseAt[p]})
		}
	}
	// The stack has as many layers as the rarest stacked kind has
	// modules; a kind with a multiple of that many (a gated MLP's two
	// mlp_in per layer) has that many modules per layer.
	layers := 0
	for kind, entries := range byKind {
		if stackedKinds[moduleOfKind(kind)] && (layers == 0 || len(entries) < layers) {
			layers = len(entries)
		}
	}
	for kind, entries := range byKind {
		if !stackedKinds[moduleOfKind(kind)] {
			continue
		}
		perLayer := 1
		if len(entries)%layers == 0 {
			perLayer = len(entries) / layers
		}
		slices.SortFunc(entries, func(x, y entry) int { return x.at - y.at })
		for i, e := range entries {
			m := out[e.p.Name]
			m.Layer = i / perLayer
			out[e.p.Name] = m
		}
	}
	return out
}

// moduleOfKind strips ".weight" / ".bias" and the like from a kind.
func moduleOfKind(kind string) string {
	for i := range len(kind) {
		if kind[i] == '.' {
			return kind[:i]
		}
	}
	return kind
}
