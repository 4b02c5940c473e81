package loader

// The codecs this build knows: each registers itself with loader/codec.
// A new codec is one package and one line here.
import (
	_ "github.com/nwc-project/nwc/loader/codec/ecsq"
	_ "github.com/nwc-project/nwc/loader/codec/f16"
	_ "github.com/nwc-project/nwc/loader/codec/gptq"
	_ "github.com/nwc-project/nwc/loader/codec/lossless"
	_ "github.com/nwc-project/nwc/loader/codec/rtn"
	_ "github.com/nwc-project/nwc/ortcodec"
)
