// Package llama checks Llama-family models end to end against PyTorch and
// onnxruntime: the small decoders make_llama.py writes to testdata/
// (torch.onnx exports at opsets 14 and 17 with rotary embeddings, RMSNorm,
// grouped-query attention and the causal masks computed in the graph,
// with PyTorch's logits, loss and gradients), the same decoders written at
// opset 23 with RMSNormalization, RotaryEmbedding and Attention nodes, the
// Optimum-shaped decoders of internal/llamagen (attention_mask and
// position_ids inputs, caches, the merged decoder), and llama2.c's
// pretrained stories260K from the shared test data. The
// training runs through the dstune binary are in tests/e2e. Its only code
// is the tests.
package llama
