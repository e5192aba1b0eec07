// Package ir is dstune's intermediate representation: dtype-aware tensors,
// a graph of named values with static shapes, the op set with each op's
// shape inference and reference implementation, the import of ONNX
// models into it, and reverse-mode gradients built on it.
//
// # Import
//
// Import happens in two steps. NewModel converts the initializers once
// (NewModelShared uses their stored bytes in place, for multi-gigabyte
// checkpoints): floating-point initializers become parameters, identified
// by their ONNX name everywhere, integer ones constants, and so do
// floating-point ones whose values the import reads (Resize's scales,
// Dropout's ratio: see Model.convertInitializers). Model.Specialize
// then imports the nodes for concrete input shapes: every value gets a
// static type, everything computable from constants is folded (the Shape
// → Gather → Concat → Reshape subgraphs exporters write, masks built with
// Range and Where, ...), attributes are normalized (axes non-negative,
// Split sizes, Slice bounds and auto_pad resolved, old opsets' forms
// rewritten), nodes no output needs are dropped, and the erf GELU spelled
// out in five ops becomes one Gelu. Backends therefore see static shapes
// and a closed set of ops whose attributes need no interpretation.
// Model.Float32Compute imports a float16 or bfloat16 checkpoint to compute
// in float32, with float32 master copies of its weights.
//
// Operators are registered by family: each ops_<family>.go file calls
// registerOp(domain, opType, importer) in its init function, next to the
// importers and to the IR ops and gradient rules that are its own, and
// registerStaticOperands for the inputs that must be known at import
// (Reshape's shape, Pad's pads, a reduction's axes); Model.ValueInputs
// follows those back to the graph inputs a caller must bind as values,
// through subgraphs. Besides the default domain the registry holds
// ai.onnx.ml, ai.onnx.preview.training (optimizers as compositions,
// Gradient through Grad), ai.onnx.preview (FlexAttention) and the
// com.microsoft operators onnxruntime's optimizers write. Where a
// composition of existing ops is exact, an operator imports as one (a
// composer chains the ops, compose.go), so kernels, gradients and
// lowerings come with its parts; only what a composition cannot do well
// is an op of its own.
//
// What has no static form is resolved at import, so that backends only
// ever see tensor ops:
//
//   - Control flow. An If whose condition is known imports its branch;
//     one whose condition is computed at run time imports both and
//     selects each output with Where. Loop and Scan are unrolled: the
//     body is imported once per iteration, loop-carried values threaded
//     and scan outputs stacked; a Loop's trip count and condition must be
//     known at import. Subgraphs see the outer scope and count against a
//     bound on imported nodes.
//   - Model-local functions. A call is inlined: the function's nodes are
//     imported in a scope of their own, attribute references bound to
//     the call's attributes or the function's defaults
//     (import_function.go).
//   - Sequences and optionals exist only in the importer: a sequence is
//     the list of its element values, an optional a value or none, so
//     positions must be known at import. Graph inputs of those types are
//     bound element by element (Bindings.Composites); outputs are returned
//     element by element, Graph.Results describing their structure and
//     Graph.Assemble rebuilding it (datum.go).
//   - Strings are values known at import: string operators fold, and a
//     string output is a Result's constant, never a backend's.
//
// # Evaluation
//
// Every op's Eval is the reference implementation (plain Go, float32
// computed through float64 where accuracy matters, float16/bfloat16
// through float32); Interpret runs a whole graph with them and is the
// oracle backends are tested against.
//
// # Gradients
//
// Parameters stay explicit: Graph.Params lists every parameter with its
// uses (a parameter feeding several nodes is tied, e.g. GPT's wte.weight
// in the embedding Gather and, transposed, the LM head) and its aliases
// (names Identity nodes give it), so gradients and deltas are accumulated
// and keyed by the one initializer.
//
// Grad differentiates a scalar output with respect to parameters by
// reverse-mode automatic differentiation on the IR itself, so every
// backend runs (or lowers) the same gradient graph. Each op has a rule
// (grad_rules.go, or the op's gradRule beside it in its family's file)
// that emits ordinary ops (MatMul with transposed operands, ReduceSum over
// broadcast axes, an Einsum's gradient as einsums, ...) and, where a fused
// pass is much faster or exact where a composition is not, internal ops:
// UnaryGrad, SoftmaxGrad, LayerNormGrad, ScatterAddRows, SliceGrad,
// PoolGrad, ConvGradInput, ConvGradWeight (grad_ops.go), PadGrad, Im2Col,
// GridSampleGrad, RoiAlignGrad, DeformConvGrad, MaxUnpoolGrad, CumProdGrad
// and BCELossGrad. Integer and bool paths are not differentiated and zero
// gradients are pruned; tied parameters and aliases accumulate in a fixed
// order. TrainingGraph and LossGraph append a loss (softmax cross-entropy
// with an ignore index, computed with its gradient in one pass by
// SoftmaxCELoss; mean squared error; binary cross-entropy) and return the
// graphs a training step and a validation step run; WithLossDenominator
// makes a training graph whose softmax cross-entropy divides by an input
// (a gradient-accumulation step's number of targets) instead of its own
// count.
package ir
