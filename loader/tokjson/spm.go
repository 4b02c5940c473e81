package tokjson

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/nwc-project/nwc/loader/gguf"
)

// SentencePiece BPE (tokenizer.ggml.model "llama": Llama 2, Gemma 3, ...)
// as llama.cpp runs it (src/llama-vocab.cpp, llm_tokenizer_spm_session and
// llama_vocab::impl::tokenize):
//
//  1. special-token partitioning: the text is cut at every CONTROL, UNKNOWN
//     (when special tokens are parsed) and USER_DEFINED token, matched on the
//     raw text, longest tokens first;
//  2. each remaining fragment gets a " " in front when add_space_prefix is
//     set and it is the first fragment or follows a token, then every " "
//     becomes "▁" (U+2581);
//  3. the fragment is split into UTF-8 characters and adjacent symbols are
//     merged, highest score of the merged token first (ties: leftmost),
//     while the merged text is a token of the vocabulary;
//  4. a symbol that is not a token becomes its bytes as <0xXX> tokens.
//
// The Hugging Face equivalent: added tokens (step 1), a Prepend("▁") +
// Replace(" ", "▁") normalizer (step 2, applied by Hugging Face to every
// fragment between added tokens, as llama.cpp does), no pre-tokenizer, and a
// BPE model with byte_fallback (step 4) whose merges are every pair (a, b)
// of tokens whose concatenation a+b is a token, ranked by the score of a+b,
// highest first (step 3). This is how transformers' SentencePieceExtractor
// derives merges from a SentencePiece model: equal scores are ordered by the
// id of a+b, then of a, then of b. Hugging Face breaks ties between
// occurrences of one pair by position (leftmost first), as llama.cpp does;
// between different pairs of equal score llama.cpp goes by position and
// Hugging Face by rank, which can only differ for tokens that share a score
// (in Gemma 3: the control and user-defined tokens, score -1000, and the
// byte tokens, score 0) and overlap in the text.

// maxTokenBytes bounds the length of one vocabulary entry considered for
// merges: the pairs of a token are one per character boundary, so this
// bounds the merge list by the vocabulary's total size.
const maxTokenBytes = 1 << 16

// spmMerge is one merge candidate: the tokens a and b whose concatenation is
// token ab.
type spmMerge struct {
	ab, a, b int32
	score    float32
}

// sentencePieceMerges returns the merges of a SentencePiece BPE vocabulary,
// ranked as described above. Its work and memory are proportional to the
// total length of the tokens.
func sentencePieceMerges(tokens []string, index map[string]int, scores []float32) ([][2]string, error) {
	var cands []spmMerge
	for id, tok := range tokens {
		if len(tok) > maxTokenBytes {
			return nil, fmt.Errorf("%w: token %d is %d bytes long (at most %d)", ErrUnsupported, id, len(tok), maxTokenBytes)
		}
		for k := 0; k < len(tok); {
			_, size := utf8.DecodeRuneInString(tok[k:])
			k += size
			if k >= len(tok) {
				break
			}
			a, ok := index[tok[:k]]
			if !ok {
				continue
			}
			b, ok := index[tok[k:]]
			if !ok {
				continue
			}
			cands = append(cands, spmMerge{ab: int32(id), a: int32(a), b: int32(b), score: scores[id]})
		}
	}
	slices.SortFunc(cands, func(x, y spmMerge) int {
		switch {
		case x.score > y.score:
			return -1
		case x.score < y.score:
			return 1
		case x.ab != y.ab:
			return int(x.ab - y.ab)
		case x.a != y.a:
			return int(x.a - y.a)
		}
		return int(x.b - y.b)
	})
	merges := make([][2]string, len(cands))
	for i, c := range cands {
		merges[i] = [2]string{tokens[c.a], tokens[c.b]}
	}
	return merges, nil
}

// byteToken is the name of the byte-fallback token for byte b.
func byteToken(b int) string { return fmt.Sprintf("<0x%02X>", b) }

// fromSentencePiece builds the tokenizer.json of a tokenizer.ggml.model
// "llama" vocabulary (SentencePiece BPE, see the comment at the top of this
// file). It needs tokenizer.ggml.scores (float32, one per token) and the 256
// byte tokens <0x00>..<0xFF>. tokenizer.ggml.add_space_prefix (default true,
// as in llama.cpp) adds the Prepend normalizer and the decoder's Strip;
// tokenizer.ggml.add_bos_token (default true) / add_eos_token (default
// false) give the post-processor's template (Encode never adds them).
// tokenizer.ggml.pre is ignored, as llama.cpp ignores it for this model.
func fromSentencePiece(m metadata, kvs []gguf.KV) ([]byte, error) {
	v, err := readVocabulary(m, true)
	if err != nil {
		return nil, err
	}
	sv, ok := m["tokenizer.ggml.scores"]
	if !ok {
		return nil, errors.New("tokenizer: GGUF metadata has no tokenizer.ggml.scores (needed for SentencePiece BPE)")
	}
	scores, ok := sv.V.([]float32)
	if !ok {
		return nil, fmt.Errorf("tokenizer: GGUF tokenizer.ggml.scores is not an array of float32 (%s of %s)", sv.Type, sv.Elem)
	}
	if len(scores) != len(v.tokens) {
		return nil, fmt.Errorf("tokenizer: GGUF has %d token scores for %d tokens", len(scores), len(v.tokens))
	}
	for id, s := range scores {
		if math.IsNaN(float64(s)) {
			return nil, fmt.Errorf("tokenizer: GGUF score of token %d is NaN", id)
		}
	}
	for b := 0; b < 256; b++ {
		id, ok := v.index[byteToken(b)]
		if !ok {
			return nil, fmt.Errorf("%w: the byte token %s is not in the vocabulary (llama.cpp's byte fallback needs all 256)", ErrUnsupported, byteToken(b))
		}
		if tt := v.typeOf(id); tt != TokenTypeByte && v.types != nil {
			return nil, fmt.Errorf("%w: token %d %s has type %d, not BYTE", ErrUnsupported, id, byteToken(b), tt)
		}
	}
	special, err := SpecialTokens(kvs)
	if err != nil {
		return nil, err
	}
	prefix, err := m.boolean("tokenizer.ggml.add_space_prefix", true)
	if err != nil {
		return nil, err
	}
	if name, _, _ := m.str("general.name"); containsFold(name, "phi-3", "phi3") && len(v.added) > 0 {
		// llama.cpp gives Phi-3's special tokens an rstrip attribute that
		// tokenizer.json's added tokens do not express the same way.
		return nil, fmt.Errorf("%w: Phi-3 vocabularies (general.name %q): llama.cpp strips spaces after their special tokens", ErrUnsupported, name)
	}
	merges, err := sentencePieceMerges(v.tokens, v.index, scores)
	if err != nil {
		return nil, err
	}

	replace := map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"}
	var normalizer any = replace
	decoders := []any{
		map[string]any{"type": "Replace", "pattern": map[string]any{"String": "▁"}, "content": " "},
		map[string]any{"type": "ByteFallback"},
		map[string]any{"type": "Fuse"},
	}
	if prefix {
		normalizer = map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": "▁"},
			replace,
		}}
		decoders = append(decoders, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
	}
	post, err := postProcessor(nil, v.tokens, special)
	if err != nil {
		return nil, err
	}
	var unk *string
	if special.UNK >= 0 {
		u := v.tokens[special.UNK]
		unk = &u
	}
	return encodeTokenizer(hfTokenizer{
		Version:       "1.0",
		AddedTokens:   v.added,
		Normalizer:    normalizer,
		PostProcessor: post,
		Decoder:       map[string]any{"type": "Sequence", "decoders": decoders},
		Model: hfBPE{
			Type:         "BPE",
			UnkToken:     unk,
			ByteFallback: true,
			Vocab:        v.json,
			Merges:       merges,
		},
	})
}

// containsFold reports whether s, lower-cased, contains any of subs.
func containsFold(s string, subs ...string) bool {
	s = strings.ToLower(s)
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
