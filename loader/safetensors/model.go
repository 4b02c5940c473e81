package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nwc-project/nwc/loader/tensor"
)

// IndexFileName and SingleFileName are the names Hugging Face uses for the
// weights of a model directory.
const (
	IndexFileName  = "model.safetensors.index.json"
	SingleFileName = "model.safetensors"
)

// AssetFiles are the files collected as assets when they lie next to the
// weights (OpenPath, OpenDir, OpenIndex).
var AssetFiles = []string{
	"config.json",
	"tokenizer.json",
	"tokenizer_config.json",
	"special_tokens_map.json",
	"generation_config.json",
	// sentence-transformers' pipeline (plugin/bert: max_seq_length, Normalize).
	"sentence_bert_config.json",
	"modules.json",
}

// MaxIndexSize bounds the size of an index file.
const MaxIndexSize = 100 << 20

// MaxAssetSize bounds the size of one asset file.
const MaxAssetSize = 512 << 20

// Model is a set of safetensors files read as one source: the shards of a
// sharded checkpoint, or a single file, together with the model assets next to
// them. It implements tensor.Source.
type Model struct {
	shards []*File
	infos  []tensor.Info
	owner  map[string]*File
	assets []tensor.Asset
}

var _ tensor.Source = (*Model)(nil)

// OpenPath opens a model given as a .safetensors file, an index file
// (*.safetensors.index.json) or a directory that holds model.safetensors or
// model.safetensors.index.json (or else exactly one *.safetensors.index.json
// or exactly one *.safetensors file). The assets of the result are the
// AssetFiles that exist next to the weights, followed by the __metadata__ map
// (MetadataAssetName) when non-empty.
func OpenPath(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if st.IsDir() {
		return OpenDir(path)
	}
	if strings.HasSuffix(path, ".json") {
		return OpenIndex(path)
	}
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	m, err := newModel([]*File{f}, nil)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m.withSiblingAssets(filepath.Dir(path))
}

// OpenDir opens the weights of a model directory; see OpenPath.
func OpenDir(dir string) (*Model, error) {
	if fileExists(filepath.Join(dir, IndexFileName)) {
		return OpenIndex(filepath.Join(dir, IndexFileName))
	}
	if fileExists(filepath.Join(dir, SingleFileName)) {
		return OpenPath(filepath.Join(dir, SingleFileName))
	}
	indexes, _ := filepath.Glob(filepath.Join(globEscape(dir), "*.safetensors.index.json"))
	if len(indexes) == 1 {
		return OpenIndex(indexes[0])
	}
	files, _ := filepath.Glob(filepath.Join(globEscape(dir), "*.safetensors"))
	if len(indexes) == 0 && len(files) == 1 {
		return OpenPath(files[0])
	}
	return nil, fmt.Errorf("safetensors: %s: no %s or %s (found %d index files and %d .safetensors files)",
		dir, SingleFileName, IndexFileName, len(indexes), len(files))
}

type indexFile struct {
	Metadata  map[string]any     `json:"metadata"`
	WeightMap *map[string]string `json:"weight_map"`
}

// OpenIndex opens a sharded checkpoint from its index file
// (model.safetensors.index.json): every shard named in its weight_map is
// opened, and each tensor the weight_map lists must be in its shard. Tensors
// are listed shard by shard (shards sorted by file name), each shard in
// storage order. A tensor stored in two shards is an error.
func OpenIndex(path string) (*Model, error) {
	name := filepath.Base(path)
	errf := func(format string, args ...any) error {
		return fmt.Errorf("safetensors: %s: "+format, append([]any{name}, args...)...)
	}
	data, err := readFileLimited(path, MaxIndexSize)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var idx indexFile
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, errf("%w: invalid index JSON: %v", ErrCorrupt, err)
	}
	if idx.WeightMap == nil {
		return nil, errf("%w: index has no weight_map", ErrCorrupt)
	}
	dir := filepath.Dir(path)
	byShard := make(map[string][]string)
	for tname, shard := range *idx.WeightMap {
		if shard == "" || !filepath.IsLocal(shard) || strings.ContainsRune(shard, '\\') {
			return nil, errf("%w: tensor %q: shard path %q is not a file inside the model directory", ErrCorrupt, tname, shard)
		}
		byShard[shard] = append(byShard[shard], tname)
	}
	names := make([]string, 0, len(byShard))
	for s := range byShard {
		names = append(names, s)
	}
	sort.Strings(names)
	var shards []*File
	closeAll := func() {
		for _, f := range shards {
			f.Close()
		}
	}
	for _, s := range names {
		f, err := Open(filepath.Join(dir, filepath.FromSlash(s)))
		if err != nil {
			closeAll()
			return nil, errf("shard %s: %w", s, err)
		}
		shards = append(shards, f)
	}
	m, err := newModel(shards, names)
	if err != nil {
		closeAll()
		return nil, errf("%w", err)
	}
	for i, s := range names {
		for _, tname := range byShard[s] {
			if m.owner[tname] != shards[i] {
				closeAll()
				return nil, errf("%w: tensor %q: listed in weight_map for %s but not stored there", ErrCorrupt, tname, s)
			}
		}
	}
	return m.withSiblingAssets(dir)
}

// newModel joins files; shardNames (optional) names them in errors.
func newModel(files []*File, shardNames []string) (*Model, error) {
	m := &Model{shards: files, owner: make(map[string]*File)}
	var md map[string]string
	for i, f := range files {
		for _, ti := range f.Tensors() {
			if prev, dup := m.owner[ti.Name]; dup {
				other := prev.Name()
				if shardNames != nil {
					other = shardNames[indexOf(files, prev)]
				}
				this := f.Name()
				if shardNames != nil {
					this = shardNames[i]
				}
				return nil, fmt.Errorf("%w: tensor %q: stored in both %s and %s", ErrCorrupt, ti.Name, other, this)
			}
			m.owner[ti.Name] = f
			m.infos = append(m.infos, ti)
		}
		for k, v := range f.Metadata() {
			if md == nil {
				md = make(map[string]string)
			}
			if _, ok := md[k]; !ok {
				md[k] = v
			}
		}
	}
	if len(md) > 0 {
		b, err := json.Marshal(md)
		if err != nil {
			return nil, err
		}
		m.assets = append(m.assets, tensor.Asset{Name: MetadataAssetName, Data: b})
	}
	return m, nil
}

func indexOf(files []*File, f *File) int {
	for i, g := range files {
		if g == f {
			return i
		}
	}
	return 0
}

// withSiblingAssets prepends the AssetFiles found in dir. On error it closes m.
func (m *Model) withSiblingAssets(dir string) (*Model, error) {
	var assets []tensor.Asset
	for _, name := range AssetFiles {
		data, err := readFileLimited(filepath.Join(dir, name), MaxAssetSize)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("safetensors: asset: %w", err)
		}
		assets = append(assets, tensor.Asset{Name: name, Data: data})
	}
	m.assets = append(assets, m.assets...)
	return m, nil
}

// Shards returns the files of the model.
func (m *Model) Shards() []*File { return m.shards }

// Tensors lists the tensors of all shards.
func (m *Model) Tensors() []tensor.Info { return m.infos }

// Assets returns the model files found next to the weights and the
// __metadata__ map.
func (m *Model) Assets() []tensor.Asset { return m.assets }

// ReadRaw returns the stored bytes of the named tensor.
func (m *Model) ReadRaw(name string, dst []byte) ([]byte, error) {
	f, ok := m.owner[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: tensor %q: %w", name, tensor.ErrNotFound)
	}
	return f.ReadRaw(name, dst)
}

// ReadFloat32 returns the named tensor converted to float32.
func (m *Model) ReadFloat32(name string, dst []float32) ([]float32, error) {
	f, ok := m.owner[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: tensor %q: %w", name, tensor.ErrNotFound)
	}
	return f.ReadFloat32(name, dst)
}

// Close closes all shards.
func (m *Model) Close() error {
	var errs []error
	for _, f := range m.shards {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// readFileLimited reads a regular file of at most limit bytes.
func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes exceeds the limit of %d", path, st.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: exceeds the limit of %d bytes", path, limit)
	}
	return data, nil
}

func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}
