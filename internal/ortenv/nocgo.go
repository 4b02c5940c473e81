//go:build !cgo

package ortenv

import "fmt"

// Init fails in a build without cgo: the error wraps ErrLibrary and ErrNoCGO.
func Init(libPath string) error {
	return fmt.Errorf("%w: %w", ErrLibrary, ErrNoCGO)
}

// InitHost fails in a build without cgo: the error wraps ErrNotInitialized
// and ErrNoCGO.
func InitHost() error {
	return fmt.Errorf("%w: %w", ErrNotInitialized, ErrNoCGO)
}

// Host reports false in a build without cgo.
func Host() bool { return false }

// Initialized reports false in a build without cgo.
func Initialized() bool { return false }

// Library returns "" in a build without cgo.
func Library() string { return "" }

// Version returns "" in a build without cgo.
func Version() string { return "" }

// InitProvider fails in a build without cgo, like Init.
func InitProvider(provider string) error {
	if _, err := NormalizeProvider(provider); err != nil {
		return err
	}
	return Init("")
}
