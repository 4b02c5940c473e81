//go:build !cgo

package ortcodec

import (
	"fmt"

	"github.com/nwc-project/nwc/loader/codec"
)

// errNoORT says why a build without cgo cannot run the neural codec.
var errNoORT = fmt.Errorf("%w: the nwc neural codec needs ONNX Runtime, and this build has none (built with CGO_ENABLED=0; rebuild with cgo enabled)", codec.ErrUnsupported)

func newEncoder(codec.Config) (codec.Encoder, error) { return nil, errNoORT }

func newDecoder(codec.Env) (codec.Decoder, error) { return nil, errNoORT }
