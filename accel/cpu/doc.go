// Package cpu is the CPU backend: it executes ir graphs with the kernels
// package (GEMM through kernels.Sgemm and kernels.SgemmBatched, so the
// SIMD GEMM drops in behind the same calls; products of at most
// kernels.SgemvRows rows, a decode step's, through kernels.Sgemv, which
// reads B in place instead of packing it) and plain Go loops for the
// rest.
//
// Compile turns a graph into an Executable once per (graph, input
// shapes): a memory plan places every intermediate value in one arena,
// sharing bytes between values whose lifetimes do not overlap, with
// reshapes as views, and an output taking over a dying input's buffer
// when its kernel can run in place (inplace.go: the logits become their
// gradient, a scatter adds onto its base without a copy); every node gets
// a kernel with its tensors bound, so a run allocates nothing in steady
// state. Transposes that only feed a
// MatMul's last two axes are folded into the GEMM's transpose flags. An
// input that only Concat, MatMul or reference kernels read (a decoder's
// KV cache) is read where the caller keeps it, not copied in, and a cache input
// the caller lets a run update (accel.Options.UpdateInputs) takes a
// TensorScatter's new rows where it lies (borrow.go).
// Parameters are read in place from the graph's parameter tensors, so
// training updates them between runs without recompiling.
//
// Hot float32 ops (MatMul, Gemm, Add/Sub/Mul/Div with broadcasting, the
// activation functions, Softmax over the last axis, LayerNorm, Gather,
// Transpose, Slice, Where, Conv as im2col and GEMM with its gradients and
// ConvTranspose: conv.go) and the ops of training graphs (the internal
// gradient ops of package ir but Pool's, SoftmaxCELoss,
// ReduceSum/ReduceMean, Expand; grad_kernels.go) have dedicated kernels;
// every other op and
// dtype runs the op's reference implementation from package ir on the
// planned tensors, so breadth never depends on a fast path. The
// element-wise, row-wise and copy kernels split large tensors across
// Options.Threads workers in contiguous shares that each compute exactly
// what one worker would, so results are bit-identical for any thread
// count. The transcendental activations (tanh, erf, exp, the sigmoid,
// GELU), the arithmetic of same-shape or scalar operands and LayerNorm
// with its gradient run on package kernels' SIMD functions (simd.go,
// nn.go, grad_kernels.go); other element-wise functions are computed in
// float64 by the op's reference and rounded once. Transpose, Slice and
// Expand are one strided copy (strided.go): runs contiguous in the input
// are memmoves, and batched matrix transposes go in register blocks over
// bands of rows, so both sides move whole cache lines.
//
// Options.Precision bf16 gives the float32 MatMul and Gemm nodes that
// depend on a parameter bfloat16 operands with float32 sums
// (kernels.Sbgemm; precision.go), the arithmetic of torch.autocast on the
// CPU; every other node, and every value between nodes, stays float32.
// PeakGFLOPS measures the peak of each precision once, for model FLOPs
// utilization.
//
// The backend also trains (NewTrainer, train.go): the training graph's
// executable reads the parameters in place, and the update program is
// lowered to package kernels' fused passes — the optimizer's step
// (update_optim.go) and DST's selection (update_select.go: the optimizer's
// pass counts Algorithm 2's candidates, a masked pass captures the band
// around the k-th largest Δ, a radix selection where needed), bit for bit
// what update.ReferenceSelect defines.
package cpu
