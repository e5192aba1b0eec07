// Package ir is dstune's intermediate representation: dtype-aware tensors,
// a graph of named values with static shapes, the op set with each op's
// shape inference and reference implementation, and the import of ONNX
// models into it.
//
// Import happens in two steps. NewModel converts the initializers once:
// floating-point initializers become parameters (identified by their ONNX
// name everywhere), integer ones constants. Model.Specialize then imports
// the nodes for concrete input shapes: every value gets a static type,
// everything computable from constants is folded (the Shape → Gather →
// Concat → Reshape subgraphs exporters write, masks built with Range and
// Where, ConstantOfShape, ...), attributes are normalized (axes resolved
// and non-negative, Softmax before opset 13 turned into reshapes around a
// one-axis softmax, Split sizes, Slice bounds and auto_pad resolved), and
// nodes no output needs are dropped; the erf GELU exporters spell out in
// five ops becomes one Gelu. Backends therefore see static shapes and a
// closed set of ops whose attributes need no further interpretation.
//
// What has no static form is resolved at import too, so that backends
// only ever see tensor ops:
//
//   - Control flow. An If whose condition is known imports its branch;
//     one whose condition is computed at run time imports both and
//     selects each output with Where (the branches must agree in type).
//     Loop and Scan are unrolled: the body is imported once per
//     iteration, outer-scope names visible, loop-carried values threaded
//     and scan outputs stacked; a Loop's trip count and condition must be
//     known at import after each iteration. Subgraphs count against a
//     bound on imported nodes.
//   - Sequences and optionals exist only in the importer: a sequence is
//     the list of its element values, an optional a value or none
//     (SequenceValue, OptionalValue); the Sequence*, Optional*,
//     SequenceMap, SplitToSequence and ConcatFromSequence operators
//     rearrange those lists, so positions must be known at import. A
//     graph input of such a type is bound element by element
//     (Bindings.Composites: each tensor folded or fed at run time as the
//     input ElementName(name, path...)); an output is returned element by
//     element, Graph.Results describing the structure and Graph.Assemble
//     rebuilding it (datum.go).
//   - Strings are values known at import (the String dtype): string graph
//     inputs are value inputs, string operators fold (StringConcat,
//     StringSplit, StringNormalizer, RegexFullMatch, Equal, LabelEncoder,
//     TfIdfVectorizer), data movement moves strings, and a string output
//     is a Result's constant, never a backend's output.
//
// ValueInputs follows every operand that must be known at import (shape
// operands, conditions, trip counts, positions) back to the graph inputs,
// through subgraphs. Besides the default domain the importer knows
// ai.onnx.ml (LabelEncoder, TreeEnsemble, Binarizer,
// ArrayFeatureExtractor) and ai.onnx.preview.training (Adam, Adagrad,
// Momentum as compositions, Gradient through Grad); ImageDecoder decodes
// its (constant) stream at import.
//
// Parameters stay explicit: Graph.Params lists every parameter with its
// uses (a parameter feeding several nodes is tied, e.g. GPT's wte.weight
// in the embedding Gather and, transposed, the LM head) and its aliases
// (names given to it by Identity nodes, which import as plain aliasing),
// so gradients and deltas can be accumulated and keyed by the one
// initializer.
//
// Every op's Eval is the reference implementation (plain Go, float32
// computed through float64 where accuracy matters, float16/bfloat16
// through float32); Interpret runs a whole graph with them and is the
// oracle backends are tested against.
//
// Gradients are built on the IR itself, once, so every backend runs (or
// lowers) the same gradient graph. Grad differentiates a scalar output
// with respect to parameters by reverse-mode automatic differentiation: a
// rule per op (grad_rules.go) emits ordinary ops (MatMul with transposed
// operands, ReduceSum over broadcast axes, ...) and a few internal ops
// where a fused pass is much faster or more accurate (UnaryGrad,
// SoftmaxGrad, LayerNormGrad, ScatterAddRows, SliceGrad, PoolGrad,
// ConvGradInput, ConvGradWeight; grad_ops.go). Integer and bool paths are
// not differentiated and zero gradients are pruned; tied parameters and
// aliases accumulate in a fixed order. TrainingGraph and LossGraph append
// a loss (softmax cross-entropy with an ignore index, computed with its
// gradient in one pass by SoftmaxCELoss; mean squared error; binary
// cross-entropy) to a model and return the graphs a training step and a
// validation step run.
package ir
