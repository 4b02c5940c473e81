package tokjson_test

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/tokentest"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tokjson"
)

func buildSPM(t *testing.T, kvs []gguf.KV) tokenizerJSON {
	t.Helper()
	data, err := tokjson.FromGGUFMetadata(kvs)
	if err != nil {
		t.Fatal(err)
	}
	var tj tokenizerJSON
	if err := json.Unmarshal(data, &tj); err != nil {
		t.Fatal(err)
	}
	return tj
}

func TestFromGGUFMetadataSentencePiece(t *testing.T) {
	v := tokentest.NewSPMVocab()
	tj := buildSPM(t, v.KVs())
	if tj.Model.Type != "BPE" || !tj.Model.ByteFallback || tj.Model.FuseUnk || tj.Model.Unk == nil || *tj.Model.Unk != "<unk>" || len(tj.Model.Vocab) != len(v.Tokens) {
		t.Errorf("model: %s byte_fallback %v fuse_unk %v unk %v, %d tokens", tj.Model.Type, tj.Model.ByteFallback, tj.Model.FuseUnk, tj.Model.Unk, len(tj.Model.Vocab))
	}
	if tj.PreTok != nil {
		t.Errorf("pre_tokenizer %v, want none", tj.PreTok)
	}
	replace := map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"}
	wantNorm := map[string]any{"type": "Sequence", "normalizers": []any{map[string]any{"type": "Prepend", "prepend": "▁"}, replace}}
	if !reflect.DeepEqual(tj.Normalizer, wantNorm) {
		t.Errorf("normalizer %v", tj.Normalizer)
	}
	decs, _ := tj.Decoder["decoders"].([]any)
	if len(decs) != 4 || decs[3].(map[string]any)["type"] != "Strip" || decs[1].(map[string]any)["type"] != "ByteFallback" {
		t.Errorf("decoder %v", tj.Decoder)
	}
	if tj.Post["type"] != "TemplateProcessing" {
		t.Errorf("post_processor %v, want BOS template", tj.Post)
	}
	want := []addedToken{
		{ID: 0, Content: "<unk>", Special: true},
		{ID: 1, Content: "<s>", Special: true},
		{ID: 2, Content: "</s>", Special: true},
		{ID: int(v.ID["<start_of_turn>"]), Content: "<start_of_turn>", Special: true},
		{ID: int(v.ID["<td>"]), Content: "<td>"},
	}
	if !reflect.DeepEqual(tj.AddedTokens, want) {
		t.Errorf("added tokens %+v", tj.AddedTokens)
	}
	// Every pair whose concatenation is a token, best score of the result
	// first ("▁the" only as ▁t+he: "the" is no token).
	got := make([]string, len(tj.Model.Merges))
	for i, m := range tj.Model.Merges {
		got[i] = m[0] + " " + m[1]
	}
	wantMerges := []string{"▁ t", "h e", "▁t he", "l l", "▁ he", "ll o", "▁he llo", "a b", "b c", "▁ ▁", "▁ a"}
	if strings.Join(got, "|") != strings.Join(wantMerges, "|") {
		t.Errorf("merges %q\nwant   %q", got, wantMerges)
	}

	// add_space_prefix false: Replace only, no Strip; add_bos false: no
	// post-processor.
	tj = buildSPM(t, v.KVs(gguf.KV{Key: "tokenizer.ggml.add_space_prefix", Value: tokentest.Bool(false)},
		gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: tokentest.Bool(false)}))
	if !reflect.DeepEqual(tj.Normalizer, replace) || len(tj.Decoder["decoders"].([]any)) != 3 || tj.Post != nil {
		t.Errorf("no prefix: normalizer %v decoder %v post %v", tj.Normalizer, tj.Decoder, tj.Post)
	}
	// llama.cpp's defaults when the keys are absent: BOS 1, EOS 2, UNK 0,
	// BOS added, space prefix added.
	var bare []gguf.KV
	for _, kv := range v.KVs() {
		if !strings.Contains(kv.Key, "_token") && kv.Key != "tokenizer.ggml.add_space_prefix" {
			bare = append(bare, kv)
		}
	}
	sp, err := tokjson.SpecialTokens(bare)
	if err != nil || sp != (tokjson.Special{BOS: 1, EOS: 2, UNK: 0, PAD: -1, AddBOS: true}) {
		t.Errorf("defaults: %+v, %v", sp, err)
	}
	if tj := buildSPM(t, bare); tj.Normalizer.(map[string]any)["type"] != "Sequence" {
		t.Errorf("add_space_prefix default: normalizer %v", tj.Normalizer)
	}
}

// Ties between equal scores go by the id of the merged token, then of the
// left and right tokens (transformers' SentencePieceExtractor order).
func TestSentencePieceMergeTies(t *testing.T) {
	v := tokentest.NewSPMVocab()
	scores := append([]float32(nil), v.Scores...)
	for _, p := range []string{"ab", "bc", "▁▁"} {
		scores[v.ID[p]] = 5
	}
	tj := buildSPM(t, v.KVs(gguf.KV{Key: "tokenizer.ggml.scores", Value: tokentest.F32s(scores)}))
	var got []string
	for _, m := range tj.Model.Merges[:3] {
		got = append(got, m[0]+" "+m[1])
	}
	if strings.Join(got, "|") != "a b|b c|▁ ▁" {
		t.Errorf("tied merges %q", got)
	}
}

func TestFromGGUFMetadataSentencePieceErrors(t *testing.T) {
	v := tokentest.NewSPMVocab()
	set := func(key string, val gguf.Value) []gguf.KV { return v.KVs(gguf.KV{Key: key, Value: val}) }
	drop := func(key string) []gguf.KV {
		var out []gguf.KV
		for _, kv := range v.KVs() {
			if kv.Key != key {
				out = append(out, kv)
			}
		}
		return out
	}
	badType := append([]int32(nil), v.Types...)
	badType[270] = 7
	nan := append([]float32(nil), v.Scores...)
	nan[4] = float32(math.NaN())
	noByte := append([]string(nil), v.Tokens...)
	noByte[3+0x41] = "<0x41 >"
	notByteType := append([]int32(nil), v.Types...)
	notByteType[3+0x20] = tokjson.TokenTypeNormal
	checkErrors(t, []errCase{
		{"no scores", drop("tokenizer.ggml.scores"), "no tokenizer.ggml.scores", nil},
		{"scores len", set("tokenizer.ggml.scores", tokentest.F32s(v.Scores[:10])), "10 token scores for", nil},
		{"scores type", set("tokenizer.ggml.scores", tokentest.I32s(make([]int32, len(v.Tokens)))), "not an array of float32", nil},
		{"scores nan", set("tokenizer.ggml.scores", tokentest.F32s(nan)), "score of token 4 is NaN", nil},
		{"types len", set("tokenizer.ggml.token_type", tokentest.I32s(v.Types[:5])), "5 token types for", nil},
		{"unknown type", set("tokenizer.ggml.token_type", tokentest.I32s(badType)), "token 270 has unknown type 7", nil},
		{"no byte token", set("tokenizer.ggml.tokens", tokentest.Strs(noByte)), "byte token <0x41> is not in the vocabulary", tokjson.ErrUnsupported},
		{"byte token type", set("tokenizer.ggml.token_type", tokentest.I32s(notByteType)), "<0x20> has type 1, not BYTE", tokjson.ErrUnsupported},
		{"no tokens", drop("tokenizer.ggml.tokens"), "no tokenizer.ggml.tokens", nil},
		{"prefix type", set("tokenizer.ggml.add_space_prefix", tokentest.U32(1)), "add_space_prefix is a", nil},
		{"unk range", set("tokenizer.ggml.unknown_token_id", tokentest.U32(1<<20)), "outside the vocabulary", nil},
		{"phi-3", set("general.name", tokentest.Str("Phi-3-mini")), "Phi-3", tokjson.ErrUnsupported},
	})
}

func TestIDsSHA256(t *testing.T) {
	// sha256 of the bytes 01 00 00 00 ff ff ff ff (sha256sum).
	if got := tokjson.IDsSHA256([]int32{1, -1}); got != "b15348c8f462384c01e83b6d499c6faf3f96808f5aa07c6bab4b65b36b4445d4" {
		t.Errorf("digest %s", got)
	}
	long := make([]int32, 5000) // more than one 4096-byte block
	long[4999] = 7
	if tokjson.IDsSHA256(long) == tokjson.IDsSHA256(long[:4999]) || tokjson.IDsSHA256(long) == tokjson.IDsSHA256(make([]int32, 5000)) {
		t.Error("digest ignores the tail")
	}
}
