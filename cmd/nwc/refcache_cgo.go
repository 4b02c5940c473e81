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
// len(tokens) x vocab float32 logits, little endian; a file beside it (.stats)
// holds each row's eval.RowStats (M, L as float64, Argmax as uint32, little
// endian), so that every model compared with the reference reuses its
// log-sum-exps (eval.StatsLM) instead of computing them again.
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

const statsRecord = 8 + 8 + 4

// LogitsStats returns the window's logits and their row stats, from the cache
// when it has them; stats missing or malformed on disk are computed from the
// logits and written.
func (c *cachedLM) LogitsStats(ctx context.Context, tokens []int32) ([]float32, []eval.RowStats, error) {
	logits, err := c.Logits(ctx, tokens)
	if err != nil {
		return nil, nil, err
	}
	p := c.path(tokens) + ".stats"
	if data, err := os.ReadFile(p); err == nil && len(data) == statsRecord*len(tokens) {
		st := make([]eval.RowStats, len(tokens))
		ok := true
		for i := range st {
			r := data[statsRecord*i:]
			st[i] = eval.RowStats{
				M:      math.Float64frombits(binary.LittleEndian.Uint64(r)),
				L:      math.Float64frombits(binary.LittleEndian.Uint64(r[8:])),
				Argmax: int32(binary.LittleEndian.Uint32(r[16:])),
			}
			if math.IsNaN(st[i].M) || math.IsInf(st[i].M, 0) || !(st[i].L >= 0) || math.IsInf(st[i].L, 0) ||
				st[i].Argmax < 0 || int(st[i].Argmax) >= c.Vocab() {
				ok = false
				break
			}
		}
		if ok {
			return logits, st, nil
		}
	}
	st, err := eval.Stats(logits, c.Vocab(), 0)
	if err != nil {
		return nil, nil, fmt.Errorf("eval: reference: %w", err)
	}
	data := make([]byte, statsRecord*len(st))
	for i, s := range st {
		r := data[statsRecord*i:]
		binary.LittleEndian.PutUint64(r, math.Float64bits(s.M))
		binary.LittleEndian.PutUint64(r[8:], math.Float64bits(s.L))
		binary.LittleEndian.PutUint32(r[16:], uint32(s.Argmax))
	}
	if err := writeAtomic(p, data); err != nil {
		return nil, nil, err
	}
	return logits, st, nil
}

// writeAtomic writes data to p through a temporary file renamed over it.
func writeAtomic(p string, data []byte) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("eval: reference cache: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("eval: reference cache: %w", err)
	}
	return nil
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
	if err := writeAtomic(p, data); err != nil {
		return nil, err
	}
	return out, nil
}
