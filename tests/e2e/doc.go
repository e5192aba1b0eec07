// Package e2e runs dstune end to end as users do, through the dstune
// binary (built once by TestMain with the test's build tags): an ONNX
// model is fine-tuned with DST (`dstune train --method dst`), its delta
// applied (`dstune apply`), and the written model checked against the
// training run's parameters bit for bit and, in onnxruntime, against the
// logits of `dstune run --delta`. Llama-family models take part too: the
// torch.onnx exports of tests/llama fine-tuned with --method full and dst,
// and llama2.c's pretrained stories260K with DST. Its only code is the
// tests.
package e2e
