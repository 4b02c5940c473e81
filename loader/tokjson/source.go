package tokjson

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/loader/tensor"
)

// TokenizerAsset is the name of the asset that carries a Hugging Face
// tokenizer.json.
const TokenizerAsset = "tokenizer.json"

// builderVersion is part of the cache key: bump it whenever FromGGUFMetadata
// changes what it writes, so that stale cached files are not reused.
const builderVersion = "nwc-gguf-tokenizer-v2"

// ErrNoTokenizer is wrapped when a model source carries neither a
// tokenizer.json nor GGUF tokenizer metadata.
var ErrNoTokenizer = errors.New("model has no tokenizer")

// Origin tells where the tokenizer.json of a source came from.
type Origin struct {
	// Kind is "asset" (the source's tokenizer.json), "gguf-cache" (built
	// from the GGUF metadata earlier and read from the cache) or "gguf-built"
	// (built from the GGUF metadata now).
	Kind string
	// Path of the cached file for the gguf kinds ("" when it could not be
	// written).
	Path string
	// Key is the cache key (hex sha256) for the gguf kinds.
	Key string
}

// CacheKey is the sha256 (hex) that names the cached tokenizer.json built
// from kvs: the hash of builderVersion, a newline, and the metadata JSON
// (gguf.MarshalMetadataJSON) of the tokenizer.* keys in file order. Two
// quantizations of one model share it; other metadata does not matter.
func CacheKey(kvs []gguf.KV) (string, error) {
	var tk []gguf.KV
	for _, kv := range kvs {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			tk = append(tk, kv)
		}
	}
	data, err := gguf.MarshalMetadataJSON(tk)
	if err != nil {
		return "", fmt.Errorf("tokenizer: %w", err)
	}
	h := sha256.New()
	h.Write([]byte(builderVersion + "\n"))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CachePath returns where the tokenizer.json built for key is cached:
// $NWC_CACHE/tokenizers/<key>.json.
func CachePath(key string) string {
	return filepath.Join(refmodel.CacheDir(), "tokenizers", key+".json")
}

// JSONForGGUF returns the tokenizer.json for GGUF metadata, from the cache
// when an earlier call built it, else built now and cached (a cache that
// cannot be written is not an error; Origin.Path is then empty).
func JSONForGGUF(kvs []gguf.KV) ([]byte, Origin, error) {
	key, err := CacheKey(kvs)
	if err != nil {
		return nil, Origin{}, err
	}
	path := CachePath(key)
	if data, err := os.ReadFile(path); err == nil && len(data) > 0 {
		return data, Origin{Kind: "gguf-cache", Path: path, Key: key}, nil
	}
	data, err := FromGGUFMetadata(kvs)
	if err != nil {
		return nil, Origin{}, err
	}
	o := Origin{Kind: "gguf-built", Key: key}
	if err := writeAtomic(path, data); err == nil {
		o.Path = path
	}
	return data, o, nil
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(0o644)
	}
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
	}
	return werr
}

// JSONForSource returns the tokenizer.json of a model source: its
// tokenizer.json asset when it has one, else one built from its
// gguf-metadata.json asset (see JSONForGGUF).
func JSONForSource(src tensor.Source) ([]byte, Origin, error) {
	var meta []byte
	for _, a := range src.Assets() {
		switch a.Name {
		case TokenizerAsset:
			return a.Data, Origin{Kind: "asset"}, nil
		case gguf.MetadataAsset:
			meta = a.Data
		}
	}
	if meta == nil {
		return nil, Origin{}, fmt.Errorf("tokenizer: %w (no %s and no %s asset)", ErrNoTokenizer, TokenizerAsset, gguf.MetadataAsset)
	}
	kvs, err := gguf.ParseMetadataJSON(meta)
	if err != nil {
		return nil, Origin{}, fmt.Errorf("tokenizer: %w", err)
	}
	return JSONForGGUF(kvs)
}

// IDsSHA256 is the digest the tokenizer checks compare: the hex sha256 of
// ids as consecutive little-endian 32-bit integers (what `nwc tokenize`
// prints and scripts/check-gguf-tokenizer.py computes for llama.cpp).
func IDsSHA256(ids []int32) string {
	h := sha256.New()
	var b [4096]byte
	for len(ids) > 0 {
		n := min(len(ids), len(b)/4)
		for i, id := range ids[:n] {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(id))
		}
		h.Write(b[:4*n])
		ids = ids[n:]
	}
	return hex.EncodeToString(h.Sum(nil))
}
