// Package calib collects the calibration statistics of NWC (method step 3)
// and LDLQ (step 6): for every linear weight W of a decoder block, the
// input Hessian proxy H = XᵀX, X being the activations that enter W when
// the reference model reads calibration text.
//
// A block has seven linear weights but only four distinct inputs (q/k/v
// read the same normed hidden state, gate/up another), so four H matrices
// per layer are collected, each shared by the weights that read it. They
// are computed inside the model's ONNX graph (llama.Calibrator: one Gemm
// XᵀX per input per window, in float32, ONNX Runtime's MLAS), and summed
// over windows in float64 here.
//
// # Normalization
//
// H is the plain sum over all calibration tokens, H = Σ_t x_t x_tᵀ (not
// the mean; Input.Tokens says how many). LDLQ divides H by its mean
// diagonal anyway, and an importance ranking by diag(H) does not depend on
// the scale. H is made exactly symmetric ((H+Hᵀ)/2) and rounded to float32
// precision, so that a freshly collected H and one loaded from the cache are
// the same numbers.
//
// # Text and windows
//
// The default text is the project's Gutenberg calibration text
// (eval.CalibrationText: four public-domain novels, disjoint from the
// WikiText-2 evaluation text), tokenized whole without special tokens (the
// GPTQ convention, as eval does). Tokens/SeqLen windows of SeqLen tokens
// start at evenly spaced line starts over the whole text (so every novel
// contributes), each scored from position 0 without BOS; only the text the
// windows need is tokenized.
//
// # Attention-sink weighting
//
// The first token of every window is an attention sink: its activations are
// unlike those of every later token (a few very large, nearly constant
// channels), and every later query reads its keys and values. A plain XᵀX
// gives it weight 1 in 2048, so error feedback (GPTQ, LDLQ) may move
// rounding error into directions that cancel for ordinary tokens but not for
// the sink, which then spoils the whole window (docs/QUANTIZERS.md measures
// it on smollm2-135m: GPTQ-g128 4-bit perplexity 50.4 with plain H, 40.5
// with the sink weighted x128, RTN 41.6). So H counts the first token of
// every window SinkWeight times:
//
//	H = Σ_t x_t x_tᵀ + (SinkWeight - 1) Σ_windows x_0 x_0ᵀ
//
// Both sums are collected and cached separately (the sink sum by running
// the first token of every window alone: attention is causal, so position 0
// does not see the rest of the window), and the weight is applied after
// loading: changing it never needs the model to be run again.
//
// # Without calibration data
//
// Identity(n) is the fallback H = I: LDLQ then does no error feedback and
// every column has the same importance (NoCalibrationNote says so).
//
// # Build
//
// Collecting runs the model through ONNX Runtime, so it needs cgo: in a
// build with CGO_ENABLED=0 the package has only its defaults,
// NoCalibrationNote and Identity.
package calib

// Defaults.
const (
	// DefaultTokens: 32 windows of 2048 tokens. That is 43 tokens per
	// column for the widest input of smollm2-135m (ffn_down, n = 1536),
	// enough for a well-conditioned H after LDLQ's 1% damping, and a
	// few minutes on two CPU cores (docs/CALIBRATION.md has the numbers).
	DefaultTokens = 65536
	// DefaultSeqLen is the window length (eval.DefaultSeqLen, the GPTQ
	// convention).
	DefaultSeqLen = 2048
	// DefaultSinkWeight is how many times the first token of every window
	// counts in H (see "Attention-sink weighting").
	DefaultSinkWeight = 128
	// MaxSinkWeight bounds Options.SinkWeight.
	MaxSinkWeight = 1 << 20
)

// Protocols of nwc compress --calib.
const (
	// ProtocolOnePass: every H from the unquantized model (Collect).
	ProtocolOnePass = "onepass"
	// ProtocolSequential: GPTQ's protocol (Sequential).
	ProtocolSequential = "sequential"
)

// NoCalibrationNote is the note to print when a compressor falls back to
// Identity for lack of calibration data.
const NoCalibrationNote = "no calibration data: H = I for every linear (LDLQ error feedback off, all columns of equal importance)"

// Identity returns the n x n identity, the H used without calibration data
// (ldlq.NewFactor also takes nil for it).
func Identity(n int) []float64 {
	h := make([]float64, n*n)
	for i := 0; i < n; i++ {
		h[i*n+i] = 1
	}
	return h
}
