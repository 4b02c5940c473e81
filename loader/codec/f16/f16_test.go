package f16

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
)

func TestRegisteredRoundTrip(t *testing.T) {
	c, _, err := codec.Lookup("f16")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Lossy || c.Calibration {
		t.Fatalf("f16 registered as %+v", c)
	}
	enc, err := c.NewEncoder(codec.Config{})
	if err != nil {
		t.Fatal(err)
	}
	w := []float32{0, 1, -2.5, 1.0 / 3, 65504, 1e-8, float32(math.Pi), -0.1}
	info := tensor.Info{Name: "blk.0.ffn_up.weight", DType: tensor.F32, Shape: []int64{2, 4}, Size: 32}
	out, err := enc.Encode(context.Background(), codec.Input{Info: info, Weights: w})
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != ID || len(out.Payload) != 2*len(w) {
		t.Fatalf("id %d, %d payload bytes", out.ID, len(out.Payload))
	}
	dec, err := codec.NewDecoders(codec.Env{}).Decode(context.Background(), out.ID,
		codec.Section{Name: info.Name, DType: tensor.F32, Shape: info.Shape, RawSize: 32}, out.Payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range w {
		got := math.Float32frombits(binary.LittleEndian.Uint32(dec[4*i:]))
		if want := tensor.F16ToF32(tensor.F32ToF16(v)); got != want {
			t.Errorf("w[%d] = %g decoded %g, want %g", i, v, got, want)
		}
		if v != 0 && math.Abs(float64(got-v)) > math.Abs(float64(v))/1024+6e-8 {
			t.Errorf("w[%d] = %g decoded %g: beyond half precision", i, v, got)
		}
	}
	var st stage.Times
	if _, err := (coder{}).Decode(stage.With(context.Background(), &st), codec.Section{DType: tensor.F32, Shape: info.Shape, RawSize: 32}, out.Payload, nil); err != nil || st.Items(stage.Rescale) != 8 {
		t.Fatalf("timed decode: %v, %d weights in stage.Rescale", err, st.Items(stage.Rescale))
	}
	if _, err := (coder{}).Decode(context.Background(), codec.Section{DType: tensor.F32, Shape: []int64{2, 4}, RawSize: 32}, out.Payload[:15], nil); !errors.Is(err, codec.ErrCorrupt) {
		t.Fatalf("short payload: %v", err)
	}
	if _, err := (coder{}).Decode(context.Background(), codec.Section{DType: tensor.F16, Shape: []int64{2, 4}, RawSize: 16}, out.Payload, nil); !errors.Is(err, codec.ErrCorrupt) {
		t.Fatalf("wrong dtype: %v", err)
	}
}
