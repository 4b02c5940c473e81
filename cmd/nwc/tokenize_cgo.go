//go:build cgo

package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/nwc-project/nwc/eval"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tokjson"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

// tokenizeJSON is what `nwc tokenize` prints.
type tokenizeJSON struct {
	Model      string `json:"model"`
	Tokenizer  string `json:"tokenizer"` // where the tokenizer.json came from
	Text       string `json:"text"`
	TextBytes  int    `json:"text_bytes"`
	TextSHA256 string `json:"text_sha256"`
	Count      int    `json:"count"`
	SHA256     string `json:"sha256"` // of the ids as little-endian int32
	RoundTrip  *bool  `json:"round_trip,omitempty"`
}

// runTokenize tokenizes a text in one call, as `nwc eval` does (no BOS or
// EOS; special-token strings in the text match their tokens), and prints the
// token count and the ids' sha256.
func runTokenize(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tokenize", flag.ContinueOnError)
	model := fs.String("model", "", "model NAME|PATH whose tokenizer to use (GGUF metadata or tokenizer.json)")
	textPath := fs.String("text", "", "text file (default: the embedded WikiText-2 test text)")
	raw := fs.Bool("raw", false, "tokenize the file as it is (default: rows joined with \"\\n\\n\", as nwc eval does)")
	idsOut := fs.String("ids-out", "", "also write the ids to this file as little-endian int32")
	roundTrip := fs.Bool("round-trip", false, "also check that decoding the ids gives the text back")
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *model == "" && len(pos) == 1 {
		*model = pos[0]
	} else if len(pos) > 0 {
		return fmt.Errorf("tokenize: unexpected arguments %v", pos)
	}
	if *model == "" {
		fmt.Fprintln(os.Stderr, "usage: nwc tokenize --model NAME|PATH [--text PATH] [--raw] [--ids-out FILE] [--round-trip] [--json]")
		return errUsage
	}
	load := eval.LoadText
	if *raw {
		load = eval.LoadRawText
	}
	txt, err := load(*textPath)
	if err != nil {
		return err
	}
	src, _, err := loader.Open(*model, codec.Env{})
	if err != nil {
		return err
	}
	_, origin, err := tokjson.JSONForSource(src)
	if err != nil {
		src.Close()
		return err
	}
	tok, err := tokenizer.ForSource(src)
	src.Close()
	if err != nil {
		return err
	}
	defer tok.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	ids, err := tok.Encode(txt.Joined)
	if err != nil {
		return fmt.Errorf("tokenize: %s: %w", txt.Source, err)
	}
	out := tokenizeJSON{Model: *model, Tokenizer: origin.Kind, Text: txt.Source, TextBytes: len(txt.Joined),
		TextSHA256: fmt.Sprintf("%x", sha256.Sum256([]byte(txt.Joined))), Count: len(ids), SHA256: tokjson.IDsSHA256(ids)}
	if *roundTrip {
		back, err := tok.Decode(ids)
		if err != nil {
			return fmt.Errorf("tokenize: decode: %w", err)
		}
		same := back == txt.Joined
		out.RoundTrip = &same
	}
	if *idsOut != "" {
		b := make([]byte, 4*len(ids))
		for i, id := range ids {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(id))
		}
		if err := os.WriteFile(*idsOut, b, 0o644); err != nil {
			return fmt.Errorf("tokenize: %w", err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(out)
	}
	fmt.Printf("nwc tokenize: %s (tokenizer.json: %s), text %s (%d bytes, sha256 %s)\n", out.Model, out.Tokenizer, out.Text, out.TextBytes, out.TextSHA256)
	fmt.Printf("tokens %d sha256 %s\n", out.Count, out.SHA256)
	if out.RoundTrip != nil {
		fmt.Printf("round trip (decode(encode(text)) == text): %v\n", *out.RoundTrip)
	}
	if out.RoundTrip != nil && !*out.RoundTrip {
		return fmt.Errorf("tokenize: decode(encode(text)) differs from the text")
	}
	return nil
}
