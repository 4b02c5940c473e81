// Package tokjson gives a model's tokenizer as a Hugging Face tokenizer.json,
// in pure Go: the tokenizer.json asset a model carries, or one built from
// its GGUF metadata (tokenizer.ggml.*: byte-level BPE vocabularies with their
// merges and pre-tokenizer, or SentencePiece BPE vocabularies with scores,
// whose merges it derives; special tokens) so that it gives llama.cpp's ids,
// and cached under $NWC_CACHE/tokenizers.
// Running the tokenizer (text to ids) is plugin/tokenizer's job, through the
// Rust tokenizers library.
package tokjson
