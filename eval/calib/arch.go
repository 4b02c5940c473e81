//go:build cgo

package calib

import (
	"context"

	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/bert"
	"github.com/nwc-project/nwc/plugin/llama"
)

// The architecture dispatch of collect: the calibration graph of a Llama-like
// decoder (plugin/llama) or of a BERT encoder (plugin/bert).
type calibrator interface {
	Provider() string
	// attention names the attention implementation (Hessians.Attention).
	attention() string
	// inputs are fresh Inputs (H allocated) in the graph's output order.
	inputs() []*Input
	run(ctx context.Context, wins [][]int32, add func(i int, h []float32)) error
	Close() error
}

func openCalibrator(src tensor.Source, o Options) (calibrator, error) {
	if bert.IsBERT(src) {
		c, err := bert.OpenCalibrator(src, bert.CalibrationOptions{Provider: o.Provider, Threads: o.Threads, Logf: o.Logf})
		if err != nil {
			return nil, err
		}
		return bertCalibrator{c}, nil
	}
	c, err := llama.OpenCalibrator(src, llama.CalibrationOptions{Provider: o.Provider, Threads: o.Threads, Logf: o.Logf})
	if err != nil {
		return nil, err
	}
	return llamaCalibrator{c}, nil
}

type llamaCalibrator struct{ *llama.Calibrator }

func (c llamaCalibrator) attention() string {
	return llama.DefaultAttention(c.Config(), c.Provider())
}

func (c llamaCalibrator) inputs() []*Input {
	var ins []*Input
	for _, ci := range c.Inputs() {
		ins = append(ins, &Input{Name: ci.Name, Layer: ci.Layer, Kind: ci.Kind, N: ci.N, Weights: ci.Weights, H: make([]float64, ci.N*ci.N)})
	}
	return ins
}

func (c llamaCalibrator) run(ctx context.Context, wins [][]int32, add func(int, []float32)) error {
	return c.Run(ctx, wins, add, nil)
}

type bertCalibrator struct{ *bert.Calibrator }

func (bertCalibrator) attention() string { return "bert" }

func (c bertCalibrator) inputs() []*Input {
	var ins []*Input
	for _, ci := range c.Inputs() {
		ins = append(ins, &Input{Name: ci.Name, Layer: ci.Layer, Kind: ci.Kind, N: ci.N, Weights: ci.Weights, H: make([]float64, ci.N*ci.N)})
	}
	return ins
}

func (c bertCalibrator) run(ctx context.Context, wins [][]int32, add func(int, []float32)) error {
	return c.Run(ctx, wins, add)
}

// forBERT adapts a collection to a BERT encoder: its own tokenizer
// (tokenizer.json without the file's truncation and padding), windows of
// at most max_seq_length-2 content tokens (each run as [CLS] window [SEP]),
// and no attention-sink weighting (that is for causal decoders, whose
// first token can be run alone; an encoder's tokens all see each other).
// The returned close frees the tokenizer.
func forBERT(src tensor.Source, o Options) (Encoder, Options, func(), error) {
	cfg, err := bert.ConfigFromSource(src)
	if err != nil {
		return nil, o, nil, err
	}
	tok, err := bert.NewTokenizer(src)
	if err != nil {
		return nil, o, nil, err
	}
	if maxLen := cfg.MaxSeqLen - 2; o.SeqLen == 0 || o.SeqLen > maxLen {
		o.SeqLen = maxLen
	}
	o.SinkWeight = 1
	return tok, o, func() { tok.Close() }, nil
}
