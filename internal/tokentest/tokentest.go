// Package tokentest is test support for the tokenizer packages
// (loader/tokjson, plugin/tokenizer): GGUF metadata value helpers, a tiny
// byte-level BPE vocabulary as GGUF metadata, and a source that carries only
// assets. It is imported only from _test.go files.
package tokentest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
)

// Str, U32, Bool, Strs and I32s make GGUF metadata values.
func Str(s string) gguf.Value { return gguf.Value{Type: gguf.ValueString, V: s} }
func U32(x uint32) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: x} }
func Bool(b bool) gguf.Value {
	return gguf.Value{Type: gguf.ValueBool, V: b}
}
func Strs(s []string) gguf.Value {
	return gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueString, V: s}
}
func I32s(x []int32) gguf.Value {
	return gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueInt32, V: x}
}

// TinyVocab is a byte-level BPE vocabulary: two control tokens, the 256
// byte characters, a few merges, and one user-defined token.
type TinyVocab struct {
	Tokens []string
	Types  []int32
	Merges []string
	ID     map[string]int32
}

// NewTinyVocab builds the vocabulary.
func NewTinyVocab() *TinyVocab {
	v := &TinyVocab{ID: map[string]int32{}}
	add := func(tok string, typ int32) {
		v.ID[tok] = int32(len(v.Tokens))
		v.Tokens = append(v.Tokens, tok)
		v.Types = append(v.Types, typ)
	}
	add("<|endoftext|>", tokjson.TokenTypeControl)
	add("<|im_start|>", tokjson.TokenTypeControl)
	for _, r := range tokjson.ByteAlphabet() {
		add(string(r), tokjson.TokenTypeNormal)
	}
	for _, m := range []string{"Ġ t", "l l", "e ll", "h ell", "hell o", "h e", "Ġt he", "Ġ 1", "Ġ Ġ"} {
		a, b, _ := strings.Cut(m, " ")
		add(a+b, tokjson.TokenTypeNormal)
		v.Merges = append(v.Merges, m)
	}
	add("<think>", tokjson.TokenTypeUserDefined)
	return v
}

// KVs is the vocabulary as GGUF metadata with tokenizer.ggml.pre = pre.
func (v *TinyVocab) KVs(pre string, extra ...gguf.KV) []gguf.KV {
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: Str("llama")},
		{Key: "tokenizer.ggml.model", Value: Str("gpt2")},
		{Key: "tokenizer.ggml.pre", Value: Str(pre)},
		{Key: "tokenizer.ggml.tokens", Value: Strs(v.Tokens)},
		{Key: "tokenizer.ggml.token_type", Value: I32s(v.Types)},
		{Key: "tokenizer.ggml.merges", Value: Strs(v.Merges)},
		{Key: "tokenizer.ggml.bos_token_id", Value: U32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: U32(0)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: U32(0)},
		{Key: "tokenizer.ggml.padding_token_id", Value: U32(0)},
		{Key: "tokenizer.ggml.add_bos_token", Value: Bool(false)},
	}
	return append(kvs, extra...)
}

// IDs maps tokens to their ids.
func (v *TinyVocab) IDs(t testing.TB, toks ...string) []int32 {
	t.Helper()
	out := make([]int32, len(toks))
	for i, s := range toks {
		id, ok := v.ID[s]
		if !ok {
			t.Fatalf("no token %q", s)
		}
		out[i] = id
	}
	return out
}

// AssetSource is a tensor.Source that carries only assets.
type AssetSource struct{ List []tensor.Asset }

func (f AssetSource) Tensors() []tensor.Info { return nil }
func (f AssetSource) Assets() []tensor.Asset { return f.List }
func (f AssetSource) Close() error           { return nil }
func (f AssetSource) ReadRaw(string, []byte) ([]byte, error) {
	return nil, tensor.ErrNotFound
}
func (f AssetSource) ReadFloat32(string, []float32) ([]float32, error) {
	return nil, tensor.ErrNotFound
}

// F32s makes a GGUF float32 array value.
func F32s(x []float32) gguf.Value {
	return gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueFloat32, V: x}
}

// SPMVocab is a tiny SentencePiece BPE vocabulary (tokenizer.ggml.model
// "llama"): <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, single
// characters, scored pieces (higher score merges first), a control token
// <start_of_turn> and a user-defined token <td>. No piece contains "é", so
// it takes the byte fallback.
type SPMVocab struct {
	Tokens []string
	Types  []int32
	Scores []float32
	ID     map[string]int32
}

// NewSPMVocab builds the vocabulary.
func NewSPMVocab() *SPMVocab {
	v := &SPMVocab{ID: map[string]int32{}}
	add := func(tok string, typ int32, score float32) {
		v.ID[tok] = int32(len(v.Tokens))
		v.Tokens = append(v.Tokens, tok)
		v.Types = append(v.Types, typ)
		v.Scores = append(v.Scores, score)
	}
	add("<unk>", tokjson.TokenTypeUnknown, 0)
	add("<s>", tokjson.TokenTypeControl, 0)
	add("</s>", tokjson.TokenTypeControl, 0)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), tokjson.TokenTypeByte, 0)
	}
	for i, c := range []string{"▁", "a", "b", "c", "e", "h", "l", "o", "t", "<", ">", "d"} {
		add(c, tokjson.TokenTypeNormal, float32(-100-i))
	}
	for i, p := range []string{"▁t", "he", "▁the", "ll", "▁he", "llo", "▁hello", "ab", "bc", "▁▁", "▁a"} {
		add(p, tokjson.TokenTypeNormal, float32(-1-i))
	}
	add("<start_of_turn>", tokjson.TokenTypeControl, 0)
	add("<td>", tokjson.TokenTypeUserDefined, 0)
	return v
}

// KVs is the vocabulary as GGUF metadata; an extra key that is already
// there replaces its value.
func (v *SPMVocab) KVs(extra ...gguf.KV) []gguf.KV {
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: Str("llama")},
		{Key: "tokenizer.ggml.model", Value: Str("llama")},
		{Key: "tokenizer.ggml.pre", Value: Str("default")},
		{Key: "tokenizer.ggml.tokens", Value: Strs(v.Tokens)},
		{Key: "tokenizer.ggml.scores", Value: F32s(v.Scores)},
		{Key: "tokenizer.ggml.token_type", Value: I32s(v.Types)},
		{Key: "tokenizer.ggml.bos_token_id", Value: U32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: U32(2)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: U32(0)},
		{Key: "tokenizer.ggml.add_bos_token", Value: Bool(true)},
		{Key: "tokenizer.ggml.add_space_prefix", Value: Bool(true)},
	}
outer:
	for _, e := range extra {
		for i := range kvs {
			if kvs[i].Key == e.Key {
				kvs[i].Value = e.Value
				continue outer
			}
		}
		kvs = append(kvs, e)
	}
	return kvs
}

// Pieces maps ids to their tokens.
func (v *SPMVocab) Pieces(ids []int32) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = v.Tokens[id]
	}
	return out
}

// SPMReference tokenizes text the way llama.cpp's SentencePiece path does
// (src/llama-vocab.cpp: tokenizer_st_partition with parse_special = true,
// then llm_tokenizer_spm_session per fragment), written out directly so that
// tests can compare the tokenizer.json built for the same vocabulary with
// it. No BOS/EOS.
func SPMReference(tokens []string, types []int32, scores []float32, addSpacePrefix bool, text string) []int32 {
	index := make(map[string]int32, len(tokens))
	var special []int32
	for id, t := range tokens {
		index[t] = int32(id)
		switch types[id] {
		case tokjson.TokenTypeControl, tokjson.TokenTypeUserDefined, tokjson.TokenTypeUnknown:
			special = append(special, int32(id))
		}
	}
	// Longest first (llama.cpp sorts by length; ties here by id).
	slices.SortStableFunc(special, func(a, b int32) int { return len(tokens[b]) - len(tokens[a]) })
	type frag struct {
		text  string
		token int32 // -1: text
	}
	frags := []frag{{text, -1}}
	for _, id := range special {
		var next []frag
		for _, f := range frags {
			if f.token >= 0 {
				next = append(next, f)
				continue
			}
			rest := f.text
			for {
				i := strings.Index(rest, tokens[id])
				if i < 0 {
					break
				}
				if i > 0 {
					next = append(next, frag{rest[:i], -1})
				}
				next = append(next, frag{"", id})
				rest = rest[i+len(tokens[id]):]
			}
			if rest != "" {
				next = append(next, frag{rest, -1})
			}
		}
		frags = next
	}
	var out []int32
	prevSpecial := true
	for _, f := range frags {
		if f.token >= 0 {
			out = append(out, f.token)
			prevSpecial = true
			continue
		}
		s := f.text
		if addSpacePrefix && prevSpecial {
			s = " " + s
		}
		prevSpecial = false
		out = append(out, spmSession(index, scores, strings.ReplaceAll(s, " ", "▁"))...)
	}
	return out
}

// spmSession is llm_tokenizer_spm_session::tokenize: symbols are the UTF-8
// characters; the adjacent pair whose concatenation is the token with the
// highest score (then the leftmost) merges first; symbols that are not
// tokens become byte tokens.
func spmSession(index map[string]int32, scores []float32, text string) []int32 {
	type sym struct{ start, end, prev, next int }
	var syms []sym
	for i := 0; i < len(text); {
		_, n := utf8.DecodeRuneInString(text[i:])
		syms = append(syms, sym{i, i + n, len(syms) - 1, len(syms) + 1})
		i += n
	}
	if len(syms) == 0 {
		return nil
	}
	syms[len(syms)-1].next = -1
	type bigram struct {
		left, right int
		score       float32
		size        int
	}
	var queue []bigram
	try := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		s := text[syms[l].start:syms[r].end]
		if id, ok := index[s]; ok {
			queue = append(queue, bigram{l, r, scores[id], len(s)})
		}
	}
	for i := 1; i < len(syms); i++ {
		try(i-1, i)
	}
	for len(queue) > 0 {
		best := 0
		for i, b := range queue {
			if b.score > queue[best].score || (b.score == queue[best].score && b.left < queue[best].left) {
				best = i
			}
		}
		b := queue[best]
		queue = append(queue[:best], queue[best+1:]...)
		l, r := &syms[b.left], &syms[b.right]
		if l.end == l.start || r.end == r.start || (l.end-l.start)+(r.end-r.start) != b.size {
			continue
		}
		l.end = r.end
		r.start, r.end = 0, 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		try(l.prev, b.left)
		try(b.left, l.next)
	}
	var out []int32
	for i := 0; i != -1; i = syms[i].next {
		s := text[syms[i].start:syms[i].end]
		if id, ok := index[s]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(s); j++ {
			out = append(out, index[fmt.Sprintf("<0x%02X>", s[j])])
		}
	}
	return out
}
