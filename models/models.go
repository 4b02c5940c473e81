// Package models carries the trained codecs nwc ships, embedded in every
// program that uses them, so that a .nwc file made with a shipped codec
// decodes with nothing else on disk. Each codec is a folder (README.md):
// encoder.onnx, decoder.onnx, entropy.json (integer CDF tables), card.json
// (training data and measured rates); parity.bin stays in the repository for
// the parity tests and is not embedded.
package models

import "embed"

// FS holds the shipped codec folders by name (nwc-w128d2-l300/decoder.onnx, ...).
//
//go:embed nwc-*/encoder.onnx nwc-*/decoder.onnx nwc-*/entropy.json nwc-*/card.json
var FS embed.FS
