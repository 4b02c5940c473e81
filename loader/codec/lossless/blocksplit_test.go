package lossless

import (
	"bytes"
	"errors"
	"math"
	"math/rand"
	"os"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/loader/tensor"
)

// quantBlocks returns nb blocks of dt with Gaussian-looking codes (skewed
// towards the middle of the alphabet, as real weights are) and plausible
// float16 fields.
func quantBlocks(dt tensor.DType, nb int, seed int64) []byte {
	bl, _ := blockLayoutOf(dt)
	rng := rand.New(rand.NewSource(seed))
	bb := bl.blockBytes()
	raw := make([]byte, nb*bb)
	code := func() byte {
		v := math.Round(rng.NormFloat64()*float64(bl.alphabet())/7 + float64(bl.alphabet())/2)
		return byte(min(max(v, 0), float64(bl.alphabet()-1)))
	}
	for i := 0; i < nb; i++ {
		blk := raw[i*bb : (i+1)*bb]
		for f := 0; f < bl.fields(); f++ {
			h := tensor.F32ToF16(float32(rng.NormFloat64() * 0.01))
			blk[2*f], blk[2*f+1] = byte(h), byte(h>>8)
		}
		for j := bl.headerBytes; j < bb; j++ {
			if bl.nibbles {
				blk[j] = code() | code()<<4
			} else {
				blk[j] = code()
			}
		}
	}
	return raw
}

func TestBlockSplitRoundTrip(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, dt := range []tensor.DType{tensor.Q4_0, tensor.Q4_1, tensor.IQ4_NL, tensor.Q8_0} {
		// More symbols than one rANS stream holds: several streams.
		nb := 3*blockStreamSymbols/int(dt.BlockElems()) + 5
		raw := quantBlocks(dt, nb, int64(dt))
		id, params, payload, err := l.EncodeBytes(dt, raw)
		if err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		if id != IDBlockSplit {
			t.Fatalf("%s: codec %s, want block-split", dt, codec.Name(id))
		}
		zs := l.enc.EncodeAll(raw, nil)
		if len(payload) >= len(zs) {
			t.Errorf("%s: block-split %d bytes, zstd %d", dt, len(payload), len(zs))
		}
		got, err := l.DecodeBytes(id, dt, int64(len(raw)), params, payload, nil)
		if err != nil {
			t.Fatalf("%s: %v", dt, err)
		}
		if !bytes.Equal(got, raw) {
			t.Fatalf("%s: round trip differs", dt)
		}
		t.Logf("%s: %.3f bits/weight (stored %.2f, zstd %.3f)", dt, 8*float64(len(payload))/float64(int64(nb)*dt.BlockElems()),
			dt.BitsPerElement(), 8*float64(len(zs))/float64(int64(nb)*dt.BlockElems()))
	}
	// A k-quant is not block-split.
	raw := make([]byte, 144*4)
	if id, _, _, err := l.EncodeBytes(tensor.Q4_K, raw); err != nil || id == IDBlockSplit {
		t.Errorf("Q4_K: codec %s, %v", codec.Name(id), err)
	}
}

func TestBlockSplitCorrupt(t *testing.T) {
	l, _ := New()
	defer l.Close()
	raw := quantBlocks(tensor.Q4_1, 200, 5)
	payload, err := l.encodeBlockSplit(tensor.Q4_1, raw)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(raw))
	dec := func(dt tensor.DType, n int64, p []byte) error {
		_, err := l.DecodeBytes(IDBlockSplit, dt, n, nil, p, nil)
		return err
	}
	if err := dec(tensor.Q4_1, n, payload); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		dt   tensor.DType
		n    int64
		p    []byte
	}{
		{"partial block", tensor.Q4_1, n - 1, payload},
		{"one block more", tensor.Q4_1, n + 20, payload},
		{"dtype without block layout", tensor.Q4_K, n, payload},
		{"float dtype", tensor.F32, n, payload},
		{"empty payload", tensor.Q4_1, n, nil},
		{"truncated", tensor.Q4_1, n, payload[:len(payload)/2]},
		{"huge raw size", tensor.Q4_1, 20 << 40, payload},
	} {
		if err := dec(c.dt, c.n, c.p); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	bad := append([]byte{9}, payload[1:]...)
	if err := dec(tensor.Q4_1, n, bad); !errors.Is(err, codec.ErrUnsupported) {
		t.Errorf("version 9: %v", err)
	}
	// Flipped bytes anywhere: an error or the right bytes, never a panic
	// (the rANS streams carry no checksum; the container's section
	// checksum catches the rest).
	for pos := 0; pos < len(payload); pos += 7 {
		c := append([]byte(nil), payload...)
		c[pos] ^= 0xa5
		_, _ = l.DecodeBytes(IDBlockSplit, tensor.Q4_1, n, nil, c, nil)
	}
}

func FuzzBlockSplitDecode(f *testing.F) {
	l, _ := New()
	defer l.Close()
	for _, dt := range []tensor.DType{tensor.Q4_0, tensor.Q8_0} {
		raw := quantBlocks(dt, 8, 1)
		p, _ := l.encodeBlockSplit(dt, raw)
		f.Add(uint8(dt), int64(len(raw)), p)
	}
	f.Fuzz(func(t *testing.T, dt uint8, n int64, payload []byte) {
		if n < 0 || n > 1<<20 {
			return
		}
		got, err := l.DecodeBytes(IDBlockSplit, tensor.DType(dt), n, nil, payload, nil)
		if err == nil && int64(len(got)) != n {
			t.Fatalf("%d bytes, want %d", len(got), n)
		}
	})
}

// TestBlockSplitSmolLM2 codes the Q4_1 block linears of the reference model
// (layers 0 and 29) and requires bit-exact round
// trips and a rate below the stored 5 bits/weight.
func TestBlockSplitSmolLM2(t *testing.T) {
	m, err := refmodel.Lookup("smollm2-135m")
	if err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("reference model not installed: %v", err)
	}
	g, err := gguf.Open(m.File)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var elems, bytesOut int64
	tested := 0
	for _, ti := range g.Tensors() {
		if !(strings.HasPrefix(ti.Name, "blk.0.") || strings.HasPrefix(ti.Name, "blk.29.")) || ti.DType != tensor.Q4_1 {
			continue
		}
		raw, err := g.ReadRaw(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		id, params, payload, err := l.EncodeBytes(ti.DType, raw)
		if err != nil {
			t.Fatalf("%s: %v", ti.Name, err)
		}
		if id != IDBlockSplit {
			t.Errorf("%s: codec %s, want block-split", ti.Name, codec.Name(id))
		}
		got, err := l.DecodeBytes(id, ti.DType, int64(len(raw)), params, payload, nil)
		if err != nil {
			t.Fatalf("%s: %v", ti.Name, err)
		}
		if !bytes.Equal(got, raw) {
			t.Fatalf("%s: round trip differs", ti.Name)
		}
		n := tensor.NumElements(ti.Shape)
		elems += n
		bytesOut += int64(len(payload))
		tested++
		t.Logf("%-28s %s %.3f bits/weight", ti.Name, codec.Name(id), 8*float64(len(payload))/float64(n))
	}
	if tested < 14 {
		t.Fatalf("only %d Q4_1 tensors found", tested)
	}
	bpw := 8 * float64(bytesOut) / float64(elems)
	t.Logf("block linears of layers 0 and 29: %.3f bits/weight (stored Q4_1: 5.0)", bpw)
	if bpw >= 4.95 {
		t.Errorf("block-split at %.3f bits/weight, want < 4.95", bpw)
	}
}
