//go:build cgo

package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/nwc-project/nwc/eval"
	"github.com/nwc-project/nwc/loader/refmodel"
)

// cachedLM keeps the logits of a reference model on disk (`nwc eval
// --reference-cache DIR`): runs that compare many models against one
// reference on the same windows compute its logits once. A window's file is
// named after the sha256 of the reference's identity (resolved path, size,
// modification time, provider) and the window's tokens, and holds its
// len(tokens) x vocab float32 logits, little endian.
type cachedLM struct {
	eval.LM
	dir, key string
}

func newCachedLM(lm eval.LM, dir, refNameOrPath, provider string) (*cachedLM, error) {
	p, err := refmodel.Resolve(refNameOrPath)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("eval: reference cache: %w", err)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, fmt.Errorf("eval: reference cache: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("eval: reference cache: %w", err)
	}
	return &cachedLM{LM: lm, dir: dir, key: fmt.Sprintf("%s|%d|%d|%s|%d", abs, st.Size(), st.ModTime().UnixNano(), provider, lm.Vocab())}, nil
}

func (c *cachedLM) path(tokens []int32) string {
	h := sha256.New()
	h.Write([]byte(c.key))
	var b [4]byte
	for _, t := range tokens {
		binary.LittleEndian.PutUint32(b[:], uint32(t))
		h.Write(b[:])
	}
	return filepath.Join(c.dir, hex.EncodeToString(h.Sum(nil))[:32]+".f32")
}

func (c *cachedLM) Logits(ctx context.Context, tokens []int32) ([]float32, error) {
	p := c.path(tokens)
	n := len(tokens) * c.Vocab()
	if data, err := os.ReadFile(p); err == nil && len(data) == 4*n {
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
		return out, nil
	}
	out, err := c.LM.Logits(ctx, tokens)
	if err != nil || len(out) != n {
		return out, err
	}
	data := make([]byte, 4*n)
	for i, v := range out {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return nil, fmt.Errorf("eval: reference cache: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return nil, fmt.Errorf("eval: reference cache: %w", err)
	}
	return out, nil
}
