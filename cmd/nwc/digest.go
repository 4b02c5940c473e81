package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/nwc-project/nwc/loader/tensor"
)

// weightDigest fingerprints a model's weights as float32 values, whatever
// the file format: sha256 of each tensor's float32 little-endian bytes, and
// one sha256 over "name sha256\n" lines in name order. `nwc inspect
// --digest` computes it from any file (a .nwc decodes, a safetensors is
// read), `nwc eval --digest` from the weights the runtime was built with:
// equal digests mean bit-identical weights.
type weightDigest struct {
	mu  sync.Mutex
	per map[string]string
}

func newWeightDigest() *weightDigest { return &weightDigest{per: map[string]string{}} }

func (d *weightDigest) add(name string, v []float32) {
	h := sha256.New()
	var b [4096]byte
	for len(v) > 0 {
		n := min(len(v), len(b)/4)
		for i, x := range v[:n] {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		h.Write(b[:4*n])
		v = v[n:]
	}
	sum := hex.EncodeToString(h.Sum(nil))
	d.mu.Lock()
	d.per[name] = sum
	d.mu.Unlock()
}

// sum is the digest of the whole set.
func (d *weightDigest) sum() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.per))
	for n := range d.per {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s %s\n", n, d.per[n])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// digestSource digests every tensor of src, read as float32.
func digestSource(src tensor.Source) (*weightDigest, error) {
	d := newWeightDigest()
	var buf []float32
	for _, ti := range src.Tensors() {
		v, err := src.ReadFloat32(ti.Name, buf)
		if err != nil {
			return nil, err
		}
		d.add(ti.Name, v)
		buf = v
	}
	return d, nil
}
