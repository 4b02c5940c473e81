// Package ortcodec runs a trained NWC codec (a folder per models/README.md:
// encoder.onnx, decoder.onnx, entropy.json, card.json) through ONNX Runtime.
//
// Encode maps normalized 16-value weight chunks and their quality levels to
// latents; Decode maps dequantized latents back to chunks. Both run in large
// batches through a pool of sessions, each owning preallocated tensors that
// are refilled in place. Quantization and entropy coding of the latents live
// in the pure-Go package ortcodec/entropy, LDLQ error feedback in
// ortcodec/ldlq.
//
// The package is also the nwc codec of the container (codec id 20, nwc.go):
// it registers "nwc" with loader/codec, encodes block linears (row scales,
// quality levels from calibration, LDLQ feedback, rANS-coded latents) and
// decodes them. Trained codecs are found by name in an fs.FS (find.go); the
// shipped ones are embedded from package models.
//
// Without cgo (CGO_ENABLED=0) ONNX Runtime cannot be loaded: the package then
// only registers the codec, and encoding or decoding an nwc section fails
// with an error wrapping codec.ErrUnsupported that says so.
//
// The process-wide ONNX Runtime environment is owned by internal/ortenv.
package ortcodec

import (
	"errors"

	"github.com/nwc-project/nwc/loader/codec"
)

// D is the number of values per chunk (and latent channels per chunk).
const D = 16

// NumLevels is the number of quality levels (q in 0..NumLevels-1).
const NumLevels = codec.NumLevels

// File names inside a codec folder.
const (
	EncoderFile = "encoder.onnx"
	DecoderFile = "decoder.onnx"
	EntropyFile = "entropy.json"
	CardFile    = "card.json"
)

// Errors returned by this package; they are wrapped with context, so test
// with errors.Is.
var (
	// ErrClosed: the codec was closed.
	ErrClosed = errors.New("ortcodec: codec closed")
	// ErrModel: a codec folder does not match the expected layout (missing
	// file, wrong ONNX input/output names, dims or dtypes, bad card).
	ErrModel = errors.New("ortcodec: codec folder does not match the layout")
	// ErrInput: Encode/Decode arguments are inconsistent (length not
	// 16*len(q), level outside 0..3).
	ErrInput = errors.New("ortcodec: invalid input")
)
