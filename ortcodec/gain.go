package ortcodec

import (
	"encoding/json"
	"fmt"
	"math"
)

// Architecture kinds of a trained codec (card.json architecture.kind).
const (
	// KindMLP: encoder and decoder networks (ONNX), run by ONNX Runtime. A
	// card without a kind is an MLP codec.
	KindMLP = "mlp"
	// KindGain: the network-free floor: y = x_std * ENC[q,c] and
	// x = ((y_hat * DEC[q,c]) * std) + mean, with ENC/DEC learned per quality
	// level and channel. nwc computes it natively (no ONNX Runtime); its
	// ONNX graphs compute the same float32 operations in the same order.
	KindGain = "gain"
)

// gainParams are the constants of a KindGain codec, read from card.json as
// IEEE-754 bit patterns so no float is ever re-parsed.
type gainParams struct {
	enc, dec  [NumLevels][D]float32
	mean, std float32
}

// cardArch is the part of card.json the Go side reads.
type cardArch struct {
	Architecture struct {
		Kind string `json:"kind"`
		Gain *struct {
			Decoder []uint32 `json:"decoder_f32_bits"`
			Encoder []uint32 `json:"encoder_f32_bits"`
		} `json:"gain"`
	} `json:"architecture"`
	IO struct {
		Std struct {
			Mean *uint32 `json:"mean_f32_bits"`
			Std  *uint32 `json:"std_f32_bits"`
		} `json:"inside_graph_standardization"`
	} `json:"io"`
}

// parseKind returns the architecture kind of a card and, for KindGain, its
// constants. name is used in errors.
func parseKind(name string, card []byte) (string, *gainParams, error) {
	var a cardArch
	if err := json.Unmarshal(card, &a); err != nil {
		return "", nil, fmt.Errorf("%w: %s/%s: %v", ErrModel, name, CardFile, err)
	}
	switch a.Architecture.Kind {
	case "", KindMLP:
		return KindMLP, nil, nil
	case KindGain:
	default:
		return "", nil, fmt.Errorf("%w: %s/%s: unknown architecture kind %q (want %q or %q)", ErrModel, name, CardFile, a.Architecture.Kind, KindMLP, KindGain)
	}
	g := a.Architecture.Gain
	if g == nil || len(g.Decoder) != NumLevels*D || len(g.Encoder) != NumLevels*D || a.IO.Std.Mean == nil || a.IO.Std.Std == nil {
		return "", nil, fmt.Errorf("%w: %s/%s: a %q codec needs architecture.gain.{encoder,decoder}_f32_bits (%d values each) and io.inside_graph_standardization.{mean,std}_f32_bits",
			ErrModel, name, CardFile, KindGain, NumLevels*D)
	}
	p := &gainParams{mean: math.Float32frombits(*a.IO.Std.Mean), std: math.Float32frombits(*a.IO.Std.Std)}
	ok := finite(p.mean) && finite(p.std) && p.std > 0
	for i := 0; i < NumLevels*D; i++ {
		p.dec[i/D][i%D] = math.Float32frombits(g.Decoder[i])
		p.enc[i/D][i%D] = math.Float32frombits(g.Encoder[i])
		ok = ok && finite(p.dec[i/D][i%D]) && finite(p.enc[i/D][i%D]) && p.dec[i/D][i%D] != 0 && p.enc[i/D][i%D] != 0
	}
	if !ok {
		return "", nil, fmt.Errorf("%w: %s/%s: gain constants must be finite and non-zero (std > 0)", ErrModel, name, CardFile)
	}
	return KindGain, p, nil
}

func finite(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

// encode computes y = ((x - mean) / std) * ENC[q] for len(q) chunks. The
// explicit float32 conversions keep every operation separately rounded, as
// in the ONNX graph (no fused multiply-add).
func (g *gainParams) encode(x []float32, q []int64, y []float32) {
	for i, l := range q {
		e := &g.enc[l]
		xs, ys := x[i*D:(i+1)*D:(i+1)*D], y[i*D:(i+1)*D:(i+1)*D]
		for c := range D {
			ys[c] = float32(float32(xs[c]-g.mean)/g.std) * e[c]
		}
	}
}

// decode computes x = ((y_hat * DEC[q]) * std) + mean for len(q) chunks.
func (g *gainParams) decode(yhat []float32, q []int64, x []float32) {
	for i, l := range q {
		d := &g.dec[l]
		ys, xs := yhat[i*D:(i+1)*D:(i+1)*D], x[i*D:(i+1)*D:(i+1)*D]
		for c := range D {
			xs[c] = float32(float32(ys[c]*d[c])*g.std) + g.mean
		}
	}
}
