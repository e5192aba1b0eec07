// Package peft holds the parameter-efficient fine-tuning methods that
// train parameters they add to a model, the baselines the paper compares
// Dynamic Subset Tuning with: LoRA (--method lora) and prompt tuning
// (--method prompt). Both register with package train as methods that
// replace the run's graph source (train.SourceMethod), so the model's own
// parameters stay frozen and every backend trains the added ones like any
// parameter:
//
//   - LoRA edits the specialized forward graph: every target linear layer
//     y = x·M gets y + (α/r)·B·(A·dropout(x)) (lora_graph.go), with the
//     dropout masks fed by the engine every step;
//   - prompt tuning edits the ONNX model before it is imported: n virtual
//     tokens at the output of the token-embedding Gather, the sequence
//     axis of the mask and position inputs extended, the logits of the
//     real positions returned (prompt_graph.go). The same edit writes a
//     model with the prompt built in (dstune apply).
//
// Both keep their result in PEFT's file layout (adapter.go):
// adapter_model.safetensors with PEFT's key names and adapter_config.json,
// so that a PyTorch user can load it with PeftModel.from_pretrained, and
// dstune reads such files back — its own and PEFT's — to merge a LoRA
// adapter into the weights (a dense dst.TensorDelta: W + (α/r)·B·A) or to
// build a soft prompt into the graph.
package peft
