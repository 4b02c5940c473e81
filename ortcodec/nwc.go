package ortcodec

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/nwc-project/nwc/loader/codec"
)

// The nwc section format (codec id 20): parameters = version | uvarint name
// length | codec name | sha256 of the codec (Identity); payload = version |
// m fp16 row scales | n 2-bit quality levels (one per input column) | the
// entropy streams of the latents of the m/16 x n chunks (column-major: chunk
// (j, k) holds rows 16k..16k+15 of column j), decoded by the codec's
// decoder network and multiplied back by the row scales. It decodes to F32.

func init() {
	codec.Register(codec.Codec{Name: "nwc", ID: codec.IDNWC,
		Doc:   "the trained neural codec (nwc:NAME picks one, nwc:FAMILY the member closest to --bits; default family " + DefaultFamily + "; calibration)",
		Lossy: true, Calibration: true, Takes: codec.TakesUniformLevels | codec.TakesTuneRowScales,
		NewEncoder: newEncoder, NewDecoder: newDecoder})
}

const nwcPayloadVersion = 1

// params encodes the section parameters: version, name, content hash.
func (nc Identity) params() []byte {
	p := []byte{nwcPayloadVersion}
	p = binary.AppendUvarint(p, uint64(len(nc.Name)))
	p = append(p, nc.Name...)
	return append(p, nc.Hash[:]...)
}

func parseNeuralParams(p []byte) (name string, hash [32]byte, err error) {
	if len(p) < 2 || p[0] != nwcPayloadVersion {
		return "", hash, fmt.Errorf("%w: nwc parameters", codec.ErrCorrupt)
	}
	l, k := binary.Uvarint(p[1:])
	if k <= 0 || l > 256 || uint64(len(p)-1-k) != l+32 {
		return "", hash, fmt.Errorf("%w: nwc parameters", codec.ErrCorrupt)
	}
	name = string(p[1+k : 1+k+int(l)])
	copy(hash[:], p[1+k+int(l):])
	return name, hash, nil
}

// pickCodec names the trained codec an encoder uses: cfg.Arg when it names
// a codec folder (or a path to one); the member of family cfg.Arg closest
// to cfg.Bits when it names a family ("nwc:nwc-gain"); with no argument
// the member of DefaultFamily closest to cfg.Bits.
func pickCodec(cfg codec.Config) (string, error) {
	if cfg.Arg == "" {
		ci, err := ForBits(cfg.Codecs, cfg.Bits)
		return ci.Name, err
	}
	if _, _, err := Resolve(cfg.Codecs, cfg.Arg); err == nil || !errors.Is(err, ErrNoCodec) {
		return cfg.Arg, nil // Resolve reports any other problem again
	}
	if ci, err := ForBitsIn(cfg.Codecs, cfg.Arg, cfg.Bits); err == nil {
		return ci.Name, nil
	}
	return cfg.Arg, nil // not a family either: Resolve's error names it
}
