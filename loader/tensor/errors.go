package tensor

import "errors"

// Broad kinds of error that every nwc package's own sentinels also match, so
// that a host can test errors.Is(err, tensor.ErrCorrupt) whatever the file
// format or codec that found the problem.
var (
	// ErrCorrupt: a file, section or payload is malformed or truncated.
	ErrCorrupt = errors.New("corrupt data")
	// ErrUnsupported: well formed, but not something this build can read
	// (unknown version, codec, dtype, or a codec that needs ONNX Runtime).
	ErrUnsupported = errors.New("unsupported")
)

// KindError is a sentinel error with its own message that also matches a
// broad kind (ErrCorrupt, ErrUnsupported) with errors.Is.
type KindError struct {
	Msg  string
	Kind error
}

func (e *KindError) Error() string { return e.Msg }
func (e *KindError) Unwrap() error { return e.Kind }

// Kind returns a sentinel error with message msg that matches kind too.
func Kind(msg string, kind error) error { return &KindError{Msg: msg, Kind: kind} }
