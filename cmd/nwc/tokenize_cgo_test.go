//go:build cgo

package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/nwc-project/nwc/internal/tokentest"
	"github.com/nwc-project/nwc/loader/tokjson"
)

func TestTokenizeCommand(t *testing.T) {
	t.Setenv("NWC_CACHE", t.TempDir())
	dir := t.TempDir()
	model := filepath.Join(dir, "tiny.gguf")
	writeTinyGGUF(t, model)
	text := filepath.Join(dir, "t.txt")
	if err := os.WriteFile(text, []byte("hello the 1\n<|endoftext|>hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	idsPath := filepath.Join(dir, "ids.bin")
	out, err := capture(t, func() error {
		return runTokenize(context.Background(), []string{"--model", model, "--text", text, "--ids-out", idsPath, "--round-trip", "--json"})
	})
	if err != nil {
		t.Fatal(err)
	}
	var rec tokenizeJSON
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	// Rows joined with "\n\n" (as nwc eval does); Ċ is "\n" in the byte
	// alphabet.
	v := tokentest.NewTinyVocab()
	want := v.IDs(t, "hello", "Ġthe", "Ġ", "1", "Ċ", "Ċ", "<|endoftext|>", "hello")
	raw, err := os.ReadFile(idsPath)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]int32, len(raw)/4)
	for i := range got {
		got[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	if len(raw) != 4*len(want) || tokjson.IDsSHA256(got) != tokjson.IDsSHA256(want) {
		t.Errorf("ids %v, want %v", got, want)
	}
	if rec.Count != len(want) || rec.SHA256 != tokjson.IDsSHA256(want) || rec.RoundTrip == nil || !*rec.RoundTrip || rec.Tokenizer != "gguf-built" {
		t.Errorf("output %+v", rec)
	}
	if _, err := capture(t, func() error {
		return runTokenize(context.Background(), []string{"--model", filepath.Join(dir, "none.gguf")})
	}); err == nil {
		t.Error("a missing model gave no error")
	}
}
