package loader

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

const nwcPayloadVersion = 1

// Importance fractions of the method (nwc-method.md step 3): the top 0.1% of
// input columns by diag(H) get level 3, the next 1% level 2, the next 10%
// level 1, the rest level 0.
var levelFractions = [3]float64{0.001, 0.01, 0.1}

// NeuralCodec identifies a trained codec folder and its content hash
// (sha256 over decoder.onnx and entropy.json), which a container records so
// that a file is never decoded with a different codec.
type NeuralCodec struct {
	Name string
	Dir  string
	Hash [32]byte
}

// IdentifyCodec reads a codec folder's identity.
func IdentifyCodec(dir string) (NeuralCodec, error) {
	h := sha256.New()
	for _, f := range []string{ortcodec.DecoderFile, ortcodec.EntropyFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return NeuralCodec{}, fmt.Errorf("codec %s: %w", dir, err)
		}
		h.Write(b)
	}
	nc := NeuralCodec{Name: filepath.Base(filepath.Clean(dir)), Dir: dir}
	copy(nc.Hash[:], h.Sum(nil))
	return nc, nil
}

func (nc NeuralCodec) params() []byte {
	p := []byte{nwcPayloadVersion}
	p = binary.AppendUvarint(p, uint64(len(nc.Name)))
	p = append(p, nc.Name...)
	return append(p, nc.Hash[:]...)
}

func parseNeuralParams(p []byte) (name string, hash [32]byte, err error) {
	if len(p) < 2 || p[0] != nwcPayloadVersion {
		return "", hash, fmt.Errorf("%w: nwc parameters", codec.ErrCorrupt)
	}
	l, k := binary.Uvarint(p[1:])
	if k <= 0 || l > 256 || uint64(len(p)-1-k) != l+32 {
		return "", hash, fmt.Errorf("%w: nwc parameters", codec.ErrCorrupt)
	}
	name = string(p[1+k : 1+k+int(l)])
	copy(hash[:], p[1+k+int(l):])
	return name, hash, nil
}

// nwcCoder codes block linears with a neural codec.
type nwcCoder struct {
	nc    NeuralCodec
	c     *ortcodec.Codec
	block int // LDLQ feedback block
}

func (c *nwcCoder) usesH() bool  { return true }
func (c *nwcCoder) close() error { return c.c.Close() }

// Levels assigns quality levels to n input columns from diag(H); nil H
// (no calibration data) gives level 0 everywhere.
func Levels(h []float64, n int) []uint8 {
	lv := make([]uint8, n)
	if h == nil {
		return lv
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return h[idx[a]*n+idx[a]] > h[idx[b]*n+idx[b]] })
	pos := 0
	for l := 3; l >= 1; l-- {
		cnt := int(math.Ceil(levelFractions[3-l] * float64(n)))
		for i := 0; i < cnt && pos < n; i++ {
			lv[idx[pos]] = uint8(l)
			pos++
		}
	}
	return lv
}

// encode: W [m, n] -> payload = version | m fp16 row scales | n 2-bit levels
// | entropy streams of the latents of the m/16 x n chunks (column-major:
// chunk (j, k) holds rows 16k..16k+15 of column j).
func (c *nwcCoder) encode(ctx context.Context, w []float32, m, n int, h []float64) (uint8, []byte, []byte, error) {
	if m%ortcodec.D != 0 {
		return 0, nil, nil, fmt.Errorf("nwc: %d rows is not a multiple of %d", m, ortcodec.D)
	}
	scales := make([]uint16, m)
	wn := make([]float32, m*n)
	for i := 0; i < m; i++ {
		row := w[i*n : (i+1)*n]
		var s, s2 float64
		for _, v := range row {
			s += float64(v)
			s2 += float64(v) * float64(v)
		}
		mean := s / float64(n)
		std := math.Sqrt(math.Max(s2/float64(n)-mean*mean, 0))
		scales[i] = tensor.F32ToF16(float32(std))
		r := tensor.F16ToF32(scales[i])
		if r == 0 || math.IsInf(float64(r), 0) {
			scales[i] = tensor.F32ToF16(1)
			r = 1
		}
		for j, v := range row {
			wn[i*n+j] = v / r
		}
	}
	levels := Levels(h, n)
	f, err := ldlq.NewFactor(h, n, ldlq.Options{Workers: 1, BlockSize: c.block})
	if err != nil {
		return 0, nil, nil, err
	}
	kc := m / ortcodec.D // chunks per column
	syms := make([]int32, m*n)
	qAll := make([]int64, n*kc)
	for j := 0; j < n; j++ {
		for k := 0; k < kc; k++ {
			qAll[j*kc+k] = int64(levels[j])
		}
	}
	_, err = f.Quantize(ctx, wn, m, func(s, e int, blk []float32) ([]float32, error) {
		cols := e - s
		nch := cols * kc
		x := make([]float32, nch*ortcodec.D)
		q := make([]int64, nch)
		for j := 0; j < cols; j++ {
			for k := 0; k < kc; k++ {
				ch := j*kc + k
				q[ch] = int64(levels[s+j])
				for t := 0; t < ortcodec.D; t++ {
					x[ch*ortcodec.D+t] = blk[(k*ortcodec.D+t)*cols+j]
				}
			}
		}
		y, err := c.c.Encode(ctx, x, q)
		if err != nil {
			return nil, err
		}
		sy, err := c.c.Quantize(y, q, syms[s*m:e*m])
		if err != nil {
			return nil, err
		}
		yh, err := c.c.Dequantize(sy, q, nil)
		if err != nil {
			return nil, err
		}
		xh, err := c.c.Decode(ctx, yh, q)
		if err != nil {
			return nil, err
		}
		out := make([]float32, m*cols)
		for j := 0; j < cols; j++ {
			for k := 0; k < kc; k++ {
				ch := j*kc + k
				for t := 0; t < ortcodec.D; t++ {
					out[(k*ortcodec.D+t)*cols+j] = xh[ch*ortcodec.D+t]
				}
			}
		}
		return out, nil
	})
	if err != nil {
		return 0, nil, nil, err
	}
	payload := []byte{nwcPayloadVersion}
	for _, s := range scales {
		payload = binary.LittleEndian.AppendUint16(payload, s)
	}
	packed := make([]byte, (n+3)/4)
	for j, l := range levels {
		packed[j/4] |= l << (2 * (j % 4))
	}
	payload = append(payload, packed...)
	payload, err = c.c.EncodeLevels(syms, qAll, payload)
	if err != nil {
		return 0, nil, nil, err
	}
	return codec.IDNWC, c.nc.params(), payload, nil
}

// decodeNeural decodes an nwc payload of a [m, n] tensor to float32.
func decodeNeural(ctx context.Context, c *ortcodec.Codec, shape []int64, payload []byte) ([]float32, error) {
	if len(shape) != 2 || shape[0] <= 0 || shape[1] <= 0 || shape[0]%ortcodec.D != 0 || shape[0]*shape[1] > 1<<34 {
		return nil, fmt.Errorf("%w: nwc shape %v", codec.ErrCorrupt, shape)
	}
	m, n := int(shape[0]), int(shape[1])
	side := 1 + 2*m + (n+3)/4
	if len(payload) < side || payload[0] != nwcPayloadVersion {
		return nil, fmt.Errorf("%w: nwc payload of %d bytes (header needs %d)", codec.ErrCorrupt, len(payload), side)
	}
	kc := m / ortcodec.D
	q := make([]int64, n*kc)
	lv := payload[1+2*m:]
	for j := 0; j < n; j++ {
		l := int64(lv[j/4] >> (2 * (j % 4)) & 3)
		for k := 0; k < kc; k++ {
			q[j*kc+k] = l
		}
	}
	syms, err := c.DecodeLevels(payload[side:], q)
	if err != nil {
		return nil, err
	}
	yh, err := c.Dequantize(syms, q, nil)
	if err != nil {
		return nil, err
	}
	xh, err := c.Decode(ctx, yh, q)
	if err != nil {
		return nil, err
	}
	w := make([]float32, m*n)
	for i := 0; i < m; i++ {
		r := tensor.F16ToF32(binary.LittleEndian.Uint16(payload[1+2*i:]))
		k, t := i/ortcodec.D, i%ortcodec.D
		for j := 0; j < n; j++ {
			w[i*n+j] = xh[(j*kc+k)*ortcodec.D+t] * r
		}
	}
	return w, nil
}

// codecSet lazily loads the neural codecs a container names, once each.
type codecSet struct {
	mu     sync.Mutex
	loaded map[string]*ortcodec.Codec
	dirs   func(name string) (string, error)
}

func (s *codecSet) get(params []byte) (*ortcodec.Codec, error) {
	name, hash, err := parseNeuralParams(params)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.loaded[name]; ok {
		return c, nil
	}
	dir, err := s.dirs(name)
	if err != nil {
		return nil, err
	}
	nc, err := IdentifyCodec(dir)
	if err != nil {
		return nil, err
	}
	if nc.Hash != hash {
		return nil, fmt.Errorf("codec %q at %s is not the one this file was made with (content hash %x, file wants %x)", name, dir, nc.Hash[:6], hash[:6])
	}
	c, err := ortcodec.Load(dir)
	if err != nil {
		return nil, err
	}
	if s.loaded == nil {
		s.loaded = map[string]*ortcodec.Codec{}
	}
	s.loaded[name] = c
	return c, nil
}

func (s *codecSet) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, c := range s.loaded {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.loaded = nil
	return first
}
