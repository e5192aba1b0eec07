// Package faults is the fault suite: it runs the dstune binary (built once
// by TestMain with the test's build tags) on the demo's base model as a
// careless or hostile user and the machine would treat it — killed with
// SIGKILL at every point where a crash could leave something half done
// (the crash points of internal/crashpoint: a training step, each stage
// of a checkpoint's write, every atomic file write of the run, the delta
// and apply's output) and at random moments, two resumes of one run at
// once, checkpoints with flipped bits, cut files, an edited state.json or
// none at all, a full disk (a file-size limit, and a small tmpfs where the
// system lets an unprivileged user mount one) — and asserts after every
// fault either the final artifacts' sha256 of an uninterrupted run
// (checkpoint, delta, fine-tuned model, the metrics' losses) with no
// temporary file left behind, or a clean refusal that changed nothing.
//
// `go test ./tests/faults` is the short suite CI runs (well under a
// minute). tests/faults/long.sh runs the long one for a quiet machine:
// DSTUNE_FAULTS_LONG=1 (hundreds of random kills, the tmpfs test as root)
// and every fuzz target of the readers (data, checkpoints, deltas,
// safetensors, ONNX, the HTTP API's requests) for 10 minutes each. Its
// only code is the tests.
package faults
