// Package tokenizer turns text into token ids and back, reading the
// tokenizer files that come with models:
//
//   - Hugging Face's tokenizer.json: byte-level BPE (GPT-2, Llama 3, Qwen,
//     GPT-4o), sentencepiece-style BPE with byte fallback and ▁ (Llama 2,
//     Mistral, Gemma), WordPiece (BERT), Unigram (T5, with sentencepiece's
//     precompiled normalization table) and WordLevel; its normalizers,
//     pre-tokenizers (including Split patterns written for Oniguruma),
//     added and special tokens, post-processor templates and decoders;
//   - llama2.c's tokenizer.bin (such as stories260K's tok512.bin).
//
// Use:
//
//	tok, err := tokenizer.Load("tokenizer.json") // or a tokenizer.bin, or a model directory
//	ids := tok.Encode("Hello world", true)       // with the model's special tokens (BOS, [CLS] … [SEP])
//	text := tok.Decode(ids, true)                // without them
//	ids, err = tok.EncodeChecked(userText, true) // an error where text cannot be encoded (Unigram without unk_id)
//
//	st := tok.NewStream(true) // generation: one id at a time
//	for _, id := range generated {
//		fmt.Print(st.Next(id)) // text as soon as it is complete UTF-8
//	}
//	fmt.Print(st.Flush())
//
// The encodings are those of the reference implementation, the Rust
// tokenizers library, including where its behaviour is particular: its
// normalizers and BERT's character classes use Unicode 9.0 data (a
// character assigned later has no decomposition and no category), and it
// reads Unigram scores with serde_json's parsing, which can be one unit in
// the last place off and so decides ties between segmentations. The tests
// compare thousands of strings against encodings the Rust library made
// (testdata/make_refs.mjs) and list where the JavaScript implementation
// differs from it.
//
// llama2.c's tokenizer follows llama2.c's run.c: a dummy-prefix space, the
// greedy merge of the best-scoring adjacent pair, byte tokens <0xHH> for
// characters not in the vocabulary, BOS 1 and EOS 2; decoding drops the
// leading space of the piece after BOS.
//
// A Tokenizer is safe for concurrent use. Files are untrusted input:
// errors name the file and the part that was wrong (FormatError, which
// wraps ErrMalformed), sizes are bounded, and patterns that would need
// more than about a thousand matching steps per byte of text stop
// matching rather than run on.
package tokenizer
