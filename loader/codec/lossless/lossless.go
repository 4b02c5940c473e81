// Package lossless holds the lossless codecs of the .nwc container: raw,
// zstd, float-split (the exponent field of each F32/F16/BF16 value in
// its own byte plane, zstd-coded per plane) and block-split (the integer
// codes of GGML Q4_0/Q4_1/IQ4_NL/Q8_0 blocks rANS-coded apart from their
// float16 fields). The "lossless" encoder picks
// among them per tensor; every codec keeps the tensors it does not code
// (embeddings, norms, assets) with it.
package lossless

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/klauspost/compress/zstd"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
)

// Section ids (aliases of the registry's).
const (
	IDRaw        = codec.IDRaw
	IDZstd       = codec.IDZstd
	IDFloatSplit = codec.IDFloatSplit
	IDBlockSplit = codec.IDBlockSplit
)

func init() {
	dec := func(id uint8) func(codec.Env) (codec.Decoder, error) {
		return func(codec.Env) (codec.Decoder, error) { return newDecoder(id) }
	}
	codec.Register(codec.Codec{Name: "raw", ID: IDRaw, Doc: "stored bytes as they are (decode only)", NewDecoder: dec(IDRaw)})
	codec.Register(codec.Codec{Name: "zstd", ID: IDZstd, Doc: "zstd of the stored bytes (decode only)", NewDecoder: dec(IDZstd)})
	codec.Register(codec.Codec{Name: "float-split", ID: IDFloatSplit, Doc: "float exponent/mantissa planes, zstd each (decode only)", NewDecoder: dec(IDFloatSplit)})
	codec.Register(codec.Codec{Name: "block-split", ID: IDBlockSplit, Doc: "GGML block codes rANS-coded, fp16 fields float-split (decode only)", NewDecoder: dec(IDBlockSplit)})
	codec.Register(codec.Codec{Name: "lossless", Doc: "every tensor bit-exact: float-split for floats, block-split for Q4_0/Q4_1/IQ4_NL/Q8_0 blocks, zstd or raw otherwise (no --bits)",
		NewEncoder: func(codec.Config) (codec.Encoder, error) { return New() }})
}

// Lossless codes tensors without loss: float-split for F32/F16/BF16,
// block-split for Q4_0/Q4_1/IQ4_NL/Q8_0 blocks (or zstd when that is
// smaller), zstd for everything else, and raw where coding does not help. Safe for concurrent use.
type Lossless struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// New creates a lossless codec. Close releases it.
func New() (*Lossless, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("codec: zstd encoder: %w", err)
	}
	dec, err := newZstdDecoder()
	if err != nil {
		enc.Close()
		return nil, err
	}
	return &Lossless{enc: enc, dec: dec}, nil
}

func newZstdDecoder() (*zstd.Decoder, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecodeAllCapLimit(true), zstd.IgnoreChecksum(false))
	if err != nil {
		return nil, fmt.Errorf("codec: zstd decoder: %w", err)
	}
	return dec, nil
}

// Close releases the coder state.
func (l *Lossless) Close() error {
	if l.dec != nil {
		l.dec.Close()
		l.dec = nil
	}
	if l.enc != nil {
		err := l.enc.Close()
		l.enc = nil
		return err
	}
	return nil
}

// idDecoder decodes one section id: a Lossless with a zstd decoder only
// (none for raw), since an open file never encodes.
type idDecoder struct {
	l  *Lossless
	id uint8
}

func newDecoder(id uint8) (codec.Decoder, error) {
	d := idDecoder{l: &Lossless{}, id: id}
	if id != IDRaw {
		dec, err := newZstdDecoder()
		if err != nil {
			return nil, err
		}
		d.l.dec = dec
	}
	return d, nil
}

func (d idDecoder) Decode(ctx context.Context, s codec.Section, payload, dst []byte) ([]byte, error) {
	return d.l.decodeBytes(stage.From(ctx), tensor.NumElements(s.Shape), d.id, s.DType, s.RawSize, s.Params, payload, dst)
}

func (d idDecoder) Close() error { return d.l.Close() }

// Encode codes a tensor's stored bytes (codec.Encoder).
func (l *Lossless) Encode(_ context.Context, in codec.Input) (codec.Output, error) {
	id, params, payload, err := l.EncodeBytes(in.Info.DType, in.Raw)
	return codec.Output{ID: id, DType: in.Info.DType, Params: params, Payload: payload}, err
}

// EncodeBytes codes raw (the stored bytes of a tensor of dtype dt) and
// returns the codec id, its parameters and the payload.
func (l *Lossless) EncodeBytes(dt tensor.DType, raw []byte) (id uint8, params, payload []byte, err error) {
	if _, _, ok := splitLayout(dt); ok && len(raw) > 0 {
		payload = l.encodeSplit(dt, raw)
		id = IDFloatSplit
	} else {
		payload = l.enc.EncodeAll(raw, make([]byte, 0, len(raw)/2+64))
		id = IDZstd
		if _, ok := blockLayoutOf(dt); ok && len(raw) > 0 && int64(len(raw))%dt.BlockBytes() == 0 {
			bs, err := l.encodeBlockSplit(dt, raw)
			if err != nil {
				return 0, nil, nil, err
			}
			if len(bs) < len(payload) {
				payload, id = bs, IDBlockSplit
			}
		}
	}
	if len(payload) >= len(raw) {
		return IDRaw, nil, raw, nil
	}
	return id, nil, payload, nil
}

// DecodeBytes decodes a payload into the stored bytes of a tensor: rawSize
// bytes of dtype dt, reusing dst when it has the capacity.
func (l *Lossless) DecodeBytes(id uint8, dt tensor.DType, rawSize int64, params, payload, dst []byte) ([]byte, error) {
	return l.decodeBytes(nil, 0, id, dt, rawSize, params, payload, dst)
}

// decodeBytes is DecodeBytes timed in st (nil: not timed), counting n
// elements per stage: zstd is stage.Entropy; copying raw bytes and merging
// the float-split planes into dst are stage.Rescale.
func (l *Lossless) decodeBytes(st *stage.Times, n int64, id uint8, dt tensor.DType, rawSize int64, params, payload, dst []byte) ([]byte, error) {
	if len(params) != 0 {
		return nil, fmt.Errorf("%w: %s takes no parameters, got %d bytes", codec.ErrCorrupt, codec.Name(id), len(params))
	}
	switch id {
	case IDRaw:
		if int64(len(payload)) != rawSize {
			return nil, fmt.Errorf("%w: raw payload of %d bytes, want %d", codec.ErrCorrupt, len(payload), rawSize)
		}
		t0 := st.Start()
		dst = append(dst[:0], payload...)
		st.Since(stage.Rescale, t0, n)
		return dst, nil
	case IDZstd:
		t0 := st.Start()
		out, err := l.unzstd(payload, rawSize, dst)
		st.Since(stage.Entropy, t0, n)
		return out, err
	case IDFloatSplit:
		return l.decodeSplit(st, n, dt, rawSize, payload, dst)
	case IDBlockSplit:
		return l.decodeBlockSplit(st, n, dt, rawSize, payload, dst)
	}
	return nil, fmt.Errorf("%w: id %d", codec.ErrUnknownCodec, id)
}

// unzstd decodes one zstd frame that must hold exactly n bytes.
func (l *Lossless) unzstd(frame []byte, n int64, dst []byte) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		return nil, fmt.Errorf("%w: zstd header: %v", codec.ErrCorrupt, err)
	}
	// Small frames may omit the content size; DecodeAll is capped at n bytes
	// either way, and the length is checked below.
	if h.HasFCS && h.FrameContentSize != uint64(n) {
		return nil, fmt.Errorf("%w: zstd frame holds %d bytes, want %d", codec.ErrCorrupt, h.FrameContentSize, n)
	}
	if int64(cap(dst)) < n {
		dst = make([]byte, 0, n)
	}
	out, err := l.dec.DecodeAll(frame, dst[:0:n])
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %v", codec.ErrCorrupt, err)
	}
	if int64(len(out)) != n {
		return nil, fmt.Errorf("%w: zstd gave %d bytes, want %d", codec.ErrCorrupt, len(out), n)
	}
	return out, nil
}

// splitLayout gives, for a float dtype, the element width in bytes and the
// exponent field's shift and width.
func splitLayout(dt tensor.DType) (width int, expShift uint, ok bool) {
	switch dt {
	case tensor.F32:
		return 4, 23, true
	case tensor.BF16:
		return 2, 7, true
	case tensor.F16:
		return 2, 10, true
	}
	return 0, 0, false
}

// numPlanes is the number of byte planes: one for the exponent, and enough
// for the shift mantissa bits plus the sign.
func numPlanes(shift uint) int { return 1 + int(shift+1+7)/8 }

// expMask is the exponent field's mask after shifting: 8 bits for F32 and
// BF16, 5 for F16.
func expMask(dt tensor.DType) uint32 {
	if dt == tensor.F16 {
		return 0x1f
	}
	return 0xff
}

// encodeSplit separates each element x into its exponent e and the rest
// r = sign<<expShift | mantissa, writes e to plane 0 and the bytes of r to
// planes 1..width-1, and zstd-codes every plane on its own.
func (l *Lossless) encodeSplit(dt tensor.DType, raw []byte) []byte {
	width, shift, _ := splitLayout(dt)
	mask := expMask(dt)
	n := len(raw) / width
	planes := make([][]byte, numPlanes(shift))
	for p := range planes {
		planes[p] = make([]byte, n)
	}
	for i := 0; i < n; i++ {
		var x uint32
		if width == 4 {
			x = binary.LittleEndian.Uint32(raw[4*i:])
		} else {
			x = uint32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		signBit := uint(8*width - 1)
		e := (x >> shift) & mask
		r := x&(1<<shift-1) | (x>>signBit)<<shift
		planes[0][i] = byte(e)
		for p := 1; p < len(planes); p++ {
			planes[p][i] = byte(r >> (8 * (p - 1)))
		}
	}
	out := binary.AppendUvarint(nil, uint64(len(planes)))
	for _, pl := range planes {
		frame := l.enc.EncodeAll(pl, nil)
		out = binary.AppendUvarint(out, uint64(len(frame)))
		out = append(out, frame...)
	}
	return out
}

func (l *Lossless) decodeSplit(st *stage.Times, nst int64, dt tensor.DType, rawSize int64, payload, dst []byte) ([]byte, error) {
	width, shift, ok := splitLayout(dt)
	if !ok {
		return nil, fmt.Errorf("%w: float-split cannot hold %s", codec.ErrCorrupt, dt)
	}
	if rawSize%int64(width) != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of %s elements", codec.ErrCorrupt, rawSize, dt)
	}
	n := rawSize / int64(width)
	np, k := binary.Uvarint(payload)
	if k <= 0 || np != uint64(numPlanes(shift)) {
		return nil, fmt.Errorf("%w: float-split plane count", codec.ErrCorrupt)
	}
	payload = payload[k:]
	t0 := st.Start()
	planes := make([][]byte, np)
	for p := range planes {
		fl, k := binary.Uvarint(payload)
		if k <= 0 || fl > uint64(len(payload)-k) {
			return nil, fmt.Errorf("%w: float-split plane %d length", codec.ErrCorrupt, p)
		}
		var err error
		planes[p], err = l.unzstd(payload[k:k+int(fl)], n, nil)
		if err != nil {
			return nil, fmt.Errorf("plane %d: %w", p, err)
		}
		payload = payload[k+int(fl):]
	}
	if len(payload) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last plane", codec.ErrCorrupt, len(payload))
	}
	t0 = st.Since(stage.Entropy, t0, nst)
	defer st.Since(stage.Rescale, t0, nst)
	if int64(cap(dst)) < rawSize {
		dst = make([]byte, rawSize)
	}
	dst = dst[:rawSize]
	mask := expMask(dt)
	signBit := uint(8*width - 1)
	for i := int64(0); i < n; i++ {
		e := uint32(planes[0][i])
		if e > mask {
			return nil, fmt.Errorf("%w: exponent %d out of range at element %d", codec.ErrCorrupt, e, i)
		}
		var r uint32
		for p := 1; p < len(planes); p++ {
			r |= uint32(planes[p][i]) << (8 * (p - 1))
		}
		if r>>(shift+1) != 0 {
			return nil, fmt.Errorf("%w: mantissa out of range at element %d", codec.ErrCorrupt, i)
		}
		x := r&(1<<shift-1) | e<<shift | (r>>shift)<<signBit
		if width == 4 {
			binary.LittleEndian.PutUint32(dst[4*i:], x)
		} else {
			binary.LittleEndian.PutUint16(dst[2*i:], uint16(x))
		}
	}
	return dst, nil
}
