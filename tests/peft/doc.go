// Package peft checks LoRA and prompt tuning against PyTorch:
// make_reference.py writes tiny_gpt's forward pass with PEFT's adapters
// (LoRA's lora_B(lora_A(dropout(x)))·scaling, a soft prompt at the
// token embeddings) and the gradients of the loss with respect to the
// adapters into testdata/; the tests build dstune's training graphs for
// the same adapters and compare. Its only code is the tests.
package peft
