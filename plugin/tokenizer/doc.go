// Package tokenizer turns text into model token ids with Hugging Face
// tokenizers (github.com/daulet/tokenizers, the Rust `tokenizers` crate
// through cgo), reading a Hugging Face tokenizer.json.
//
// GGUF models carry no tokenizer.json: FromGGUFMetadata builds one from the
// GGUF metadata (tokenizer.ggml.*), and ForSource returns the tokenizer of any
// model source (its tokenizer.json asset, else one built from its GGUF
// metadata and cached under $NWC_CACHE/tokenizers).
//
// Building needs libtokenizers.a (`make setup` puts it in $NWC_CACHE/lib):
// set CGO_LDFLAGS=-L$NWC_CACHE/lib for go build / go test.
//
// Tokenizer and everything that loads one (FromBytes, FromFile, ForSource)
// need cgo. The tokenizer.json builder (FromGGUFMetadata, SpecialTokens,
// JSONForGGUF, JSONForSource, CacheKey, CachePath) is pure Go and is there in
// a build with CGO_ENABLED=0 too.
package tokenizer
