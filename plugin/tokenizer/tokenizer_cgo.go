//go:build cgo

package tokenizer

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	hf "github.com/daulet/tokenizers"

	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
)

// Tokenizer encodes text to token ids and back. Encode and Decode may be
// called concurrently; Close must not race with them.
type Tokenizer struct {
	mu    sync.RWMutex
	t     *hf.Tokenizer
	vocab int
}

// ErrClosed is returned by calls on a closed Tokenizer.
var ErrClosed = errors.New("tokenizer: closed")

// FromBytes loads a tokenizer from the contents of a Hugging Face
// tokenizer.json.
func FromBytes(tokenizerJSON []byte) (*Tokenizer, error) {
	if len(tokenizerJSON) == 0 {
		return nil, errors.New("tokenizer: empty tokenizer.json")
	}
	t, err := hf.FromBytes(tokenizerJSON)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: loading tokenizer.json: %w", err)
	}
	return &Tokenizer{t: t, vocab: int(t.VocabSize())}, nil
}

// FromFile loads a tokenizer from a Hugging Face tokenizer.json file.
func FromFile(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return t, nil
}

// Encode returns the token ids of text WITHOUT special tokens (no BOS/EOS:
// the GPTQ perplexity convention). Special tokens written literally in the
// text (such as "<|endoftext|>") are matched as special tokens, as the Python
// `tokenizers` package does by default. text must be valid UTF-8 without NUL
// bytes (the C interface could not carry those faithfully).
func (t *Tokenizer) Encode(text string) ([]int32, error) {
	if !utf8.ValidString(text) {
		return nil, errors.New("tokenizer: text is not valid UTF-8")
	}
	if i := strings.IndexByte(text, 0); i >= 0 {
		return nil, fmt.Errorf("tokenizer: text has a NUL byte at offset %d", i)
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.t == nil {
		return nil, ErrClosed
	}
	if text == "" {
		return []int32{}, nil
	}
	enc := t.t.EncodeWithOptions(text, false)
	if len(enc.IDs) == 0 {
		// The C interface reports encoding errors as an empty result.
		return nil, fmt.Errorf("tokenizer: encoding %d bytes of text gave no tokens", len(text))
	}
	ids := make([]int32, len(enc.IDs))
	for i, id := range enc.IDs {
		if int64(id) >= int64(t.vocab) || id > 1<<31-1 {
			return nil, fmt.Errorf("tokenizer: token id %d at %d is outside the vocabulary (%d)", id, i, t.vocab)
		}
		ids[i] = int32(id)
	}
	return ids, nil
}

// Decode returns the text of ids (special tokens included). Byte-level
// tokens that end in the middle of a UTF-8 sequence decode to U+FFFD.
func (t *Tokenizer) Decode(ids []int32) (string, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.t == nil {
		return "", ErrClosed
	}
	u := make([]uint32, len(ids))
	for i, id := range ids {
		if id < 0 || int(id) >= t.vocab {
			return "", fmt.Errorf("tokenizer: token id %d at %d is outside the vocabulary (%d)", id, i, t.vocab)
		}
		u[i] = uint32(id)
	}
	return t.t.Decode(u, false), nil
}

// VocabSize returns the number of token ids, added tokens included.
func (t *Tokenizer) VocabSize() int { return t.vocab }

// Close frees the tokenizer. It is safe to call more than once.
func (t *Tokenizer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.t != nil {
		t.t.Close()
		t.t = nil
	}
	return nil
}

// ForSource returns the tokenizer of any model source (GGUF, safetensors
// with a tokenizer.json beside it, .nwc carrying either asset). A cached
// tokenizer.json that fails to load is rebuilt once.
func ForSource(src tensor.Source) (*Tokenizer, error) {
	data, o, err := tokjson.JSONForSource(src)
	if err != nil {
		return nil, err
	}
	t, err := FromBytes(data)
	if err != nil && o.Kind == "gguf-cache" {
		os.Remove(o.Path) // damaged cache entry: build again
		data, o, err = tokjson.JSONForSource(src)
		if err != nil {
			return nil, err
		}
		t, err = FromBytes(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (tokenizer.json from %s)", err, o.Kind)
	}
	return t, nil
}
