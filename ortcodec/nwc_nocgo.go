//go:build !cgo

package ortcodec

import (
	"fmt"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader/codec"
)

// errNoORT says why a build without cgo cannot run the neural codec.
var errNoORT = fmt.Errorf("%w: the nwc neural codec needs ONNX Runtime: %w", codec.ErrUnsupported, ortenv.ErrNoCGO)

func newEncoder(codec.Config) (codec.Encoder, error) { return nil, errNoORT }

func newDecoder(codec.Env) (codec.Decoder, error) { return nil, errNoORT }
