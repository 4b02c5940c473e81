package tokjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/nwc-project/nwc/loader/gguf"
)

// GGUF token types (llama.cpp's llama_token_type / gguf TokenType).
const (
	TokenTypeNormal      = 1
	TokenTypeUnknown     = 2
	TokenTypeControl     = 3
	TokenTypeUserDefined = 4
	TokenTypeUnused      = 5
	TokenTypeByte        = 6
)

// ErrUnsupported is wrapped when the GGUF metadata describes a tokenizer that
// FromGGUFMetadata cannot reproduce exactly.
var ErrUnsupported = errors.New("unsupported GGUF tokenizer")

// Special holds the special token ids of a GGUF tokenizer (-1: absent).
type Special struct {
	BOS, EOS, UNK, PAD int32
	// AddBOS / AddEOS: whether the model wants BOS/EOS around a text
	// (tokenizer.ggml.add_bos_token / add_eos_token). Encode never adds them.
	AddBOS, AddEOS bool
}

// pretok is how a tokenizer.ggml.pre value splits text before BPE, written
// as the Hugging Face equivalent of llama.cpp's regex list for that name
// (llama-vocab.cpp, llama_vocab::impl::load and llm_tokenizer_bpe).
type pretok struct {
	preTokenizer map[string]any
	ignoreMerges bool // llama.cpp: vocab.ignore_merges (LLAMA3 pre type)
	addBOS       bool // llama.cpp's default when tokenizer.ggml.add_bos_token is absent
}

func byteLevel(useRegex bool) map[string]any {
	return map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": useRegex}
}

// The Llama 3 split regex (llama.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3; the
// pre_tokenizer Split pattern of Meta's tokenizer.json).
const llama3Regex = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// preTokenizerFor maps tokenizer.ggml.pre to the pre-tokenizer.
//
//   - GPT-2 family ("gpt2", "mpt", "olmo", "jais"): llama.cpp splits with the
//     GPT-2 regex 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
//     ?[^\s\p{L}\p{N}]+|\s+(?!\S), which is Hugging Face's
//     ByteLevel(use_regex=true).
//   - StarCoder family ("starcoder", "refact", "command-r", "smollm",
//     "codeshell", "exaone", "minerva-7b"): llama.cpp first isolates every
//     \p{N} character, then applies the GPT-2 regex; that is Hugging Face's
//     Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)],
//     exactly the pre_tokenizer of SmolLM2's own tokenizer.json.
//   - Llama 3 family ("llama3", "llama-v3", "llama-bpe", "falcon3",
//     "falcon-h1", "pixtral", "midm-2.0", "lfm2"): Split(llama3Regex,
//     Isolated) + ByteLevel(use_regex=false), BPE with ignore_merges (as
//     llama.cpp sets for this type), BOS added by default. Not verified here
//     against a model: no such model ships in a registry package we use.
//
// Other names (and "default", whose llama.cpp regexes have no Hugging Face
// counterpart in use) are refused rather than approximated.
func preTokenizerFor(pre string) (pretok, error) {
	switch pre {
	case "gpt2", "mpt", "olmo", "jais":
		return pretok{preTokenizer: byteLevel(true)}, nil
	case "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b":
		return pretok{preTokenizer: map[string]any{
			"type": "Sequence",
			"pretokenizers": []any{
				map[string]any{"type": "Digits", "individual_digits": true},
				byteLevel(true),
			},
		}}, nil
	case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2":
		return pretok{preTokenizer: map[string]any{
			"type": "Sequence",
			"pretokenizers": []any{
				map[string]any{"type": "Split", "pattern": map[string]any{"Regex": llama3Regex}, "behavior": "Isolated", "invert": false},
				byteLevel(false),
			},
		}, ignoreMerges: true, addBOS: true}, nil
	case "":
		return pretok{}, fmt.Errorf("%w: tokenizer.ggml.pre is missing (llama.cpp would fall back to its \"default\" regexes, which have no exact Hugging Face equivalent)", ErrUnsupported)
	}
	return pretok{}, fmt.Errorf("%w: pre-tokenizer %q (known: gpt2, mpt, olmo, jais, starcoder, refact, command-r, smollm, codeshell, exaone, minerva-7b, llama3, llama-v3, llama-bpe, falcon3, falcon-h1, pixtral, midm-2.0, lfm2)", ErrUnsupported, pre)
}

// metadata is a key index over GGUF key/value pairs.
type metadata map[string]gguf.Value

func newMetadata(kvs []gguf.KV) metadata {
	m := make(metadata, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func (m metadata) str(key string) (string, bool, error) {
	v, ok := m[key]
	if !ok {
		return "", false, nil
	}
	s, ok := v.Str()
	if !ok {
		return "", false, fmt.Errorf("tokenizer: GGUF %s is a %s, not a string", key, v.Type)
	}
	return s, true, nil
}

func (m metadata) boolean(key string, def bool) (bool, error) {
	v, ok := m[key]
	if !ok {
		return def, nil
	}
	b, ok := v.Bool()
	if !ok {
		return false, fmt.Errorf("tokenizer: GGUF %s is a %s, not a bool", key, v.Type)
	}
	return b, nil
}

// id returns a token id key (-1 when absent); it must be < n.
func (m metadata) id(key string, n int) (int32, error) {
	v, ok := m[key]
	if !ok {
		return -1, nil
	}
	i, ok := v.Int()
	if !ok {
		return -1, fmt.Errorf("tokenizer: GGUF %s is a %s, not an integer", key, v.Type)
	}
	if i < 0 || i >= int64(n) {
		// llama.cpp writes -1 (as uint32 0xffffffff) for "none" in some files.
		if i == 0xffffffff || i == -1 {
			return -1, nil
		}
		return -1, fmt.Errorf("tokenizer: GGUF %s = %d is outside the vocabulary (%d tokens)", key, i, n)
	}
	return int32(i), nil
}

// strs returns a required array of strings; why is appended to the error
// when the key is missing.
func (m metadata) strs(key, why string) ([]string, error) {
	v, ok := m[key]
	if !ok {
		return nil, fmt.Errorf("tokenizer: GGUF metadata has no %s%s", key, why)
	}
	s, ok := v.Strings()
	if !ok {
		return nil, fmt.Errorf("tokenizer: GGUF %s is not an array of strings (%s of %s)", key, v.Type, v.Elem)
	}
	return s, nil
}

func (m metadata) ints(key string) ([]int64, bool, error) {
	v, ok := m[key]
	if !ok {
		return nil, false, nil
	}
	var out []int64
	switch a := v.V.(type) {
	case []int32:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []uint32:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []int8:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []uint8:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []int16:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []uint16:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []int64:
		out = append([]int64(nil), a...)
	default:
		return nil, false, fmt.Errorf("tokenizer: GGUF %s is not an array of integers (%s of %s)", key, v.Type, v.Elem)
	}
	return out, true, nil
}

// SpecialTokens returns the special token ids and BOS/EOS flags of the GGUF
// tokenizer described by kvs.
func SpecialTokens(kvs []gguf.KV) (Special, error) {
	m := newMetadata(kvs)
	tv, ok := m["tokenizer.ggml.tokens"]
	if !ok {
		return Special{}, errors.New("tokenizer: GGUF metadata has no tokenizer.ggml.tokens")
	}
	n := tv.Len()
	var s Special
	var err error
	if s.BOS, err = m.id("tokenizer.ggml.bos_token_id", n); err != nil {
		return s, err
	}
	if s.EOS, err = m.id("tokenizer.ggml.eos_token_id", n); err != nil {
		return s, err
	}
	if s.UNK, err = m.id("tokenizer.ggml.unknown_token_id", n); err != nil {
		return s, err
	}
	if s.PAD, err = m.id("tokenizer.ggml.padding_token_id", n); err != nil {
		return s, err
	}
	def := false
	if model, _, _ := m.str("tokenizer.ggml.model"); model == "llama" {
		// llama.cpp's defaults for SentencePiece vocabularies (llama_vocab
		// load): <unk> 0, <s> 1, </s> 2, and BOS added.
		for _, d := range []struct {
			id  *int32
			def int32
		}{{&s.UNK, 0}, {&s.BOS, 1}, {&s.EOS, 2}} {
			if *d.id < 0 && int(d.def) < n {
				*d.id = d.def
			}
		}
		def = true
	} else {
		pre, _, _ := m.str("tokenizer.ggml.pre")
		if p, err := preTokenizerFor(pre); err == nil {
			def = p.addBOS
		}
	}
	if s.AddBOS, err = m.boolean("tokenizer.ggml.add_bos_token", def); err != nil {
		return s, err
	}
	if s.AddEOS, err = m.boolean("tokenizer.ggml.add_eos_token", false); err != nil {
		return s, err
	}
	return s, nil
}

// The tokenizer.json layout (field order as Hugging Face writes it).
type hfAddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfBPE struct {
	Type                    string          `json:"type"`
	Dropout                 *float64        `json:"dropout"`
	UnkToken                *string         `json:"unk_token"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	Vocab                   json.RawMessage `json:"vocab"`
	Merges                  [][2]string     `json:"merges"`
}

type hfTokenizer struct {
	Version       string         `json:"version"`
	Truncation    any            `json:"truncation"`
	Padding       any            `json:"padding"`
	AddedTokens   []hfAddedToken `json:"added_tokens"`
	Normalizer    any            `json:"normalizer"`
	PreTokenizer  any            `json:"pre_tokenizer"`
	PostProcessor any            `json:"post_processor"`
	Decoder       any            `json:"decoder"`
	Model         hfBPE          `json:"model"`
}

// ByteAlphabet returns the 256 characters GPT-2's byte-level BPE uses for the
// bytes 0..255 (bytes_to_unicode).
func ByteAlphabet() [256]rune {
	var a [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			a[b] = rune(b)
		} else {
			a[b] = rune(256 + n)
			n++
		}
	}
	return a
}

// FromGGUFMetadata builds a Hugging Face tokenizer.json equivalent to the
// tokenizer that the GGUF metadata describes, as llama.cpp runs it.
//
// Supported tokenizer.ggml.model values: "gpt2" (byte-level BPE, see
// fromByteLevelBPE) and "llama" (SentencePiece BPE with scores and byte
// fallback, see fromSentencePiece). Anything else wraps ErrUnsupported.
func FromGGUFMetadata(kvs []gguf.KV) ([]byte, error) {
	m := newMetadata(kvs)
	model, ok, err := m.str("tokenizer.ggml.model")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("tokenizer: GGUF metadata has no tokenizer.ggml.model")
	}
	switch model {
	case "gpt2":
		return fromByteLevelBPE(m, kvs)
	case "llama":
		return fromSentencePiece(m, kvs)
	}
	return nil, fmt.Errorf("%w: tokenizer.ggml.model %q (supported: \"gpt2\", byte-level BPE; \"llama\", SentencePiece BPE)", ErrUnsupported, model)
}

// vocabulary is tokenizer.ggml.tokens with its token types, read and checked.
type vocabulary struct {
	tokens []string
	types  []int64 // nil when the file has no tokenizer.ggml.token_type
	index  map[string]int
	json   []byte         // the BPE model's "vocab" object, in id order
	added  []hfAddedToken // control, unknown and user-defined tokens
}

// readVocabulary reads tokenizer.ggml.tokens and tokenizer.ggml.token_type.
// Tokens of type CONTROL (3) or UNKNOWN (2) become special added tokens and
// USER_DEFINED (4) ones non-special added tokens, none normalized, so that
// they match whole in the raw text as llama.cpp's special-token partitioning
// does. Tokens of type BYTE (6) are refused unless allowByte.
func readVocabulary(m metadata, allowByte bool) (*vocabulary, error) {
	tokens, err := m.strs("tokenizer.ggml.tokens", "")
	if err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, errors.New("tokenizer: GGUF tokenizer.ggml.tokens is empty")
	}
	types, haveTypes, err := m.ints("tokenizer.ggml.token_type")
	if err != nil {
		return nil, err
	}
	if haveTypes && len(types) != len(tokens) {
		return nil, fmt.Errorf("tokenizer: GGUF has %d token types for %d tokens", len(types), len(tokens))
	}
	v := &vocabulary{tokens: tokens, types: types, index: make(map[string]int, len(tokens))}
	var vocab bytes.Buffer
	vocab.Grow(len(tokens) * 16)
	vocab.WriteByte('{')
	for id, tok := range tokens {
		if !utf8.ValidString(tok) {
			return nil, fmt.Errorf("tokenizer: GGUF token %d is not valid UTF-8: %q", id, tok)
		}
		if prev, dup := v.index[tok]; dup {
			return nil, fmt.Errorf("%w: token %q appears twice (ids %d and %d)", ErrUnsupported, tok, prev, id)
		}
		v.index[tok] = id
		if id > 0 {
			vocab.WriteByte(',')
		}
		writeJSONString(&vocab, tok)
		fmt.Fprintf(&vocab, ":%d", id)
		switch tt := v.typeOf(id); tt {
		case TokenTypeNormal, TokenTypeUnused, 0:
		case TokenTypeControl, TokenTypeUnknown:
			v.added = append(v.added, hfAddedToken{ID: id, Content: tok, Special: true})
		case TokenTypeUserDefined:
			v.added = append(v.added, hfAddedToken{ID: id, Content: tok})
		case TokenTypeByte:
			if !allowByte {
				return nil, fmt.Errorf("%w: token %d has type BYTE, which a byte-level BPE vocabulary does not use", ErrUnsupported, id)
			}
		default:
			return nil, fmt.Errorf("tokenizer: GGUF token %d has unknown type %d", id, tt)
		}
	}
	vocab.WriteByte('}')
	v.json = vocab.Bytes()
	if v.added == nil {
		v.added = []hfAddedToken{}
	}
	return v, nil
}

// typeOf returns the GGUF type of token id (NORMAL when the file has none).
func (v *vocabulary) typeOf(id int) int64 {
	if v.types == nil {
		return TokenTypeNormal
	}
	return v.types[id]
}

// postProcessor returns the BOS/EOS template when the GGUF asks for either
// (nil otherwise), wrapped after base when base is not nil.
func postProcessor(base any, tokens []string, special Special) (any, error) {
	if !special.AddBOS && !special.AddEOS {
		return base, nil
	}
	tmpl, err := template(tokens, special)
	if err != nil {
		return nil, err
	}
	if base == nil {
		return tmpl, nil
	}
	return map[string]any{"type": "Sequence", "processors": []any{base, tmpl}}, nil
}

// encodeTokenizer writes tj as JSON (no HTML escaping).
func encodeTokenizer(tj hfTokenizer) ([]byte, error) {
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tj); err != nil {
		return nil, fmt.Errorf("tokenizer: writing tokenizer.json: %w", err)
	}
	return out.Bytes(), nil
}

// fromByteLevelBPE builds the tokenizer.json of a tokenizer.ggml.model
// "gpt2" vocabulary (byte-level BPE) with the pre-tokenizers listed at
// preTokenizerFor. The result has:
//   - model: BPE over tokenizer.ggml.tokens (id = position) and
//     tokenizer.ggml.merges, no dropout, no unk token when all 256 byte
//     characters are in the vocabulary (else the unknown_token_id token),
//     ignore_merges as llama.cpp sets it;
//   - added_tokens: see readVocabulary;
//   - normalizer: none; decoder: ByteLevel;
//   - post_processor: ByteLevel, plus BOS/EOS templates when
//     tokenizer.ggml.add_bos_token / add_eos_token ask for them (Encode never
//     adds special tokens, so they only matter to other users of the file).
//
// tokenizer.ggml.add_space_prefix is ignored: llama.cpp's BPE tokenizer
// does not use it either.
func fromByteLevelBPE(m metadata, kvs []gguf.KV) ([]byte, error) {
	pre, _, err := m.str("tokenizer.ggml.pre")
	if err != nil {
		return nil, err
	}
	pt, err := preTokenizerFor(pre)
	if err != nil {
		return nil, err
	}
	v, err := readVocabulary(m, false)
	if err != nil {
		return nil, err
	}
	tokens, index := v.tokens, v.index
	mergeStrs, err := m.strs("tokenizer.ggml.merges", " (needed for byte-level BPE)")
	if err != nil {
		return nil, err
	}
	special, err := SpecialTokens(kvs)
	if err != nil {
		return nil, err
	}

	merges := make([][2]string, len(mergeStrs))
	for i, s := range mergeStrs {
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return nil, fmt.Errorf("tokenizer: GGUF merge %d %q is not two tokens separated by one space", i, s)
		}
		if _, ok := index[a]; !ok {
			return nil, fmt.Errorf("tokenizer: GGUF merge %d %q: %q is not in the vocabulary", i, s, a)
		}
		if _, ok := index[b]; !ok {
			return nil, fmt.Errorf("tokenizer: GGUF merge %d %q: %q is not in the vocabulary", i, s, b)
		}
		if _, ok := index[a+b]; !ok {
			return nil, fmt.Errorf("tokenizer: GGUF merge %d %q: the merged token %q is not in the vocabulary", i, s, a+b)
		}
		merges[i] = [2]string{a, b}
	}

	// Byte-level BPE never needs an unknown token when every byte has one.
	var unk *string
	for _, r := range ByteAlphabet() {
		if _, ok := index[string(r)]; !ok {
			if special.UNK < 0 {
				return nil, fmt.Errorf("%w: byte character %q is not in the vocabulary and there is no unknown token", ErrUnsupported, r)
			}
			u := tokens[special.UNK]
			unk = &u
			break
		}
	}

	post, err := postProcessor(map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true}, tokens, special)
	if err != nil {
		return nil, err
	}
	return encodeTokenizer(hfTokenizer{
		Version:       "1.0",
		AddedTokens:   v.added,
		PreTokenizer:  pt.preTokenizer,
		PostProcessor: post,
		Decoder:       map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		Model: hfBPE{
			Type:         "BPE",
			UnkToken:     unk,
			IgnoreMerges: pt.ignoreMerges,
			Vocab:        v.json,
			Merges:       merges,
		},
	})
}

// template returns a TemplateProcessing post-processor that adds BOS and/or
// EOS around each sequence.
func template(tokens []string, s Special) (map[string]any, error) {
	specials := map[string]any{}
	piece := func(id int32, what string) (map[string]any, error) {
		if id < 0 {
			return nil, fmt.Errorf("tokenizer: GGUF asks to add %s but has no %s token id", what, what)
		}
		t := tokens[id]
		specials[t] = map[string]any{"id": t, "ids": []int32{id}, "tokens": []string{t}}
		return map[string]any{"SpecialToken": map[string]any{"id": t, "type_id": 0}}, nil
	}
	seq := func(name string, typeID int) []any {
		var out []any
		if s.AddBOS {
			p, _ := piece(s.BOS, "BOS")
			p["SpecialToken"].(map[string]any)["type_id"] = typeID
			out = append(out, p)
		}
		out = append(out, map[string]any{"Sequence": map[string]any{"id": name, "type_id": typeID}})
		if s.AddEOS {
			p, _ := piece(s.EOS, "EOS")
			p["SpecialToken"].(map[string]any)["type_id"] = typeID
			out = append(out, p)
		}
		return out
	}
	if s.AddBOS {
		if _, err := piece(s.BOS, "BOS"); err != nil {
			return nil, err
		}
	}
	if s.AddEOS {
		if _, err := piece(s.EOS, "EOS"); err != nil {
			return nil, err
		}
	}
	single := seq("A", 0)
	pair := append(seq("A", 0), seq("B", 1)...)
	return map[string]any{"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}, nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // valid UTF-8 strings never fail
	b.Write(bytes.TrimSuffix(tmp.Bytes(), []byte("\n")))
}
