package loader

import (
	"regexp"
	"strings"

	"github.com/nwc-project/nwc/loader/tensor"
)

// blockPrefix matches the transformer-block part of a tensor name in the
// GGUF (blk.N.), Hugging Face Llama (model.layers.N.) and BERT
// (encoder.layer.N.) conventions.
var blockPrefix = regexp.MustCompile(`(^|\.)(blk|layers|layer|h)\.[0-9]+\.`)

// IsBlockLinear reports whether a tensor is the weight of a linear layer
// inside a transformer block: the tensors the lossy codecs compress.
// Embeddings, norms, biases and the output head are not.
func IsBlockLinear(ti tensor.Info) bool {
	if len(ti.Shape) != 2 || !strings.HasSuffix(ti.Name, ".weight") || !blockPrefix.MatchString(ti.Name) {
		return false
	}
	lower := strings.ToLower(ti.Name)
	return !strings.Contains(lower, "norm") && !strings.Contains(lower, "embed")
}
