// Package layering states the import layers of nwc (docs/ARCHITECTURE.md)
// as data; its test fails the build when a package imports one in a higher
// layer, or when a package has no layer.
package layering

// Layer is one level of the architecture: its packages may import packages
// of the same or lower layers, never higher ones.
type Layer struct {
	Name     string
	Packages []string // import paths relative to the module
}

// Layers lists the layers bottom to top.
var Layers = []Layer{
	{"primitives", []string{
		"loader/tensor", "loader/stage", "loader/refmodel", "ortcodec/entropy", "ortcodec/ldlq", "internal/ortenv",
		"internal/testmat", "internal/layering", "models", "plugin/onnx/onnxpb", "eval/report",
	}},
	{"files", []string{
		"loader/gguf", "loader/safetensors", "loader/onnxinit", "loader/container",
		"internal/tensortest", "internal/ortenv/orttest",
	}},
	{"codec contract", []string{"loader/codec", "loader/arch", "loader/tokjson", "internal/tokentest"}},
	{"codecs", []string{
		"loader/codec/lossless", "loader/codec/rtn", "loader/codec/f16", "loader/codec/gptq",
		"loader/codec/ecsq", "ortcodec",
	}},
	{"loading", []string{"loader"}},
	{"runtime", []string{"plugin/onnx", "plugin/tokenizer", "plugin/chat", "plugin/llama", "plugin/bert"}},
	{"measurement", []string{"eval", "eval/calib", "eval/embed"}},
	{"public API", []string{"plugin", "plugin/serve"}},
	{"commands", []string{"cmd/nwc", "plugin/llama/cmd/llamadump"}},
}
