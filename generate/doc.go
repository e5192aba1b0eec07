// Package generate decodes causal language models: a Decoder runs a
// model one chunk of tokens at a time, a Session is one sequence being
// decoded, a Sampler picks the next token (greedy, temperature, top-k,
// top-p, seeded), and Run is the loop `dstune generate` and `dstune
// serve` share, with stop strings and text streamed through a Tokenizer.
// Several generations from one prompt share its prefill (Prefill, then
// Prefix.Run for each, on a fork of its session).
//
// A decoder reuses the work done for earlier positions in one of three
// ways (Mode):
//
//   - PastInputs feeds an export's own past_key_values inputs (a "with
//     past" or merged decoder, as Optimum writes them) and keeps its
//     present outputs. The cache has a capacity (a power of two); its
//     unused slots are masked through attention_mask and the positions
//     are fed through position_ids, so one compiled graph serves many
//     lengths.
//   - OwnCache rewrites a graph without cache inputs so that attention
//     reads the keys and values of earlier positions from caches dstune
//     keeps (kvcache.go explains the rewrite). It covers the decoders
//     whose positions flow position-wise into Q·Kᵀ and P·V: Llama-shaped
//     exports (stories260K, internal/llamagen's decoders, also their
//     with-past forms bound with an empty past), GPT-style ones (the
//     demo model), float16 ones.
//   - Recompute runs the whole sequence for every token: always right,
//     and the fallback when neither of the others applies.
//
// New with Auto tries PastInputs (when the model has past inputs), then
// OwnCache, then Recompute, checking each faster mode against Recompute on
// a short sequence first, and Note says what it chose and why. Graphs are
// specialized per shape (capacity × tokens fed at once) and compiled once;
// prompts are fed in chunks of powers of two up to 64 tokens so a handful
// of shapes serve every prompt. The context (the most positions) is found
// by building the graph for growing lengths: the model's position tables
// bound it (512 for stories260K, 32 for the demo model), otherwise
// DefaultContext does.
//
// The same tokens, options and seed give the same bits: a chunking that
// depends only on the lengths, kernels that give the same bits for any
// thread count, and a sampler seeded per request.
package generate
