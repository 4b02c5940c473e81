//go:build cgo

package bert

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"runtime/debug"
	"sort"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

// Tokenizer is a BERT WordPiece tokenizer (the model's tokenizer.json)
// without the file's own truncation and padding.
type Tokenizer struct {
	t        *tokenizer.Tokenizer
	cls, sep int32
}

// NewTokenizer loads the tokenizer of src (its tokenizer.json asset).
func NewTokenizer(src tensor.Source) (*Tokenizer, error) {
	data, _, err := tokjson.JSONForSource(src)
	if err != nil {
		return nil, err
	}
	data, cls, sep, err := PrepareTokenizerJSON(data)
	if err != nil {
		return nil, err
	}
	t, err := tokenizer.FromBytes(data)
	if err != nil {
		return nil, err
	}
	return &Tokenizer{t: t, cls: cls, sep: sep}, nil
}

// Encode returns the ids of text without special tokens and without
// truncation (the calib.Encoder contract).
func (t *Tokenizer) Encode(text string) ([]int32, error) {
	if strings.TrimSpace(text) == "" {
		return []int32{}, nil
	}
	return t.t.Encode(text)
}

// EncodeSentence returns [CLS] ids [SEP] with the ids truncated so that
// the whole is at most maxLen tokens (Hugging Face's truncation with
// special tokens, as sentence-transformers asks for).
func (t *Tokenizer) EncodeSentence(text string, maxLen int) ([]int32, error) {
	ids, err := t.Encode(text)
	if err != nil {
		return nil, err
	}
	return t.Wrap(ids, maxLen), nil
}

// Wrap returns [CLS] ids[:maxLen-2] [SEP].
func (t *Tokenizer) Wrap(ids []int32, maxLen int) []int32 {
	ids = ids[:min(len(ids), maxLen-2)]
	out := make([]int32, 0, len(ids)+2)
	out = append(out, t.cls)
	out = append(out, ids...)
	return append(out, t.sep)
}

// Close frees the tokenizer.
func (t *Tokenizer) Close() error { return t.t.Close() }

// Options configure Open.
type Options struct {
	// Provider is "cpu" (default) or "cuda" (falls back to the CPU with a
	// note through Logf).
	Provider string
	// Threads is ONNX Runtime's intra-op thread count (<= 0: its default).
	Threads int
	// Batch is the number of sentences per run (0: DefaultBatch).
	Batch int
	// Logf receives notes (nil: log.Printf).
	Logf func(format string, args ...any)
}

// DefaultBatch is sentence-transformers' default batch size.
const DefaultBatch = 32

// ErrClosed is returned by Embed after Close.
var ErrClosed = errors.New("bert: model closed")

// Model is a BERT sentence encoder in one ONNX Runtime session. Embed may
// be called from several goroutines.
type Model struct {
	cfg      Config
	tok      *Tokenizer
	batch    int
	provider string
	note     string

	mu   sync.RWMutex
	sess *ort.DynamicAdvancedSession
}

// Open opens the model nameOrPath (reference model name, safetensors
// folder/file or .nwc; see loader.Open).
func Open(nameOrPath string, env codec.Env, opts Options) (*Model, error) {
	src, _, err := loader.Open(nameOrPath, env)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return OpenSource(src, opts)
}

// sessionOptions initialises ONNX Runtime and returns options for the
// provider (falling back to the CPU with a note).
func sessionOptions(provider string, threads int, logf func(string, ...any)) (*ort.SessionOptions, string, string, error) {
	if err := ortenv.Init(""); err != nil {
		return nil, "", "", err
	}
	if logf == nil {
		logf = log.Printf
	}
	so, used, note, err := ortenv.SessionOptionsFallback(provider, threads)
	if err != nil {
		return nil, "", "", err
	}
	if note != "" {
		logf("bert: %s", note)
	}
	return so, used, note, nil
}

// OpenSource builds the encoder of src (which the caller still owns).
func OpenSource(src tensor.Source, opts Options) (*Model, error) {
	cfg, err := ConfigFromSource(src)
	if err != nil {
		return nil, err
	}
	tok, err := NewTokenizer(src)
	if err != nil {
		return nil, err
	}
	so, used, note, err := sessionOptions(opts.Provider, opts.Threads, opts.Logf)
	if err != nil {
		tok.Close()
		return nil, err
	}
	defer so.Destroy()
	// Decode the next weights while Build lays out the current one.
	pf := loader.Prefetch(context.Background(), src, false, loader.PrefetchOptions{Order: prefetchOrder(cfg), Transposed: isLinear})
	data, err := Build(cfg, pf)
	pf.Close()
	debug.FreeOSMemory()
	if err != nil {
		tok.Close()
		return nil, err
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{InputIDs, InputMask}, []string{OutputHidden}, so)
	data = nil
	debug.FreeOSMemory()
	if err != nil {
		tok.Close()
		return nil, fmt.Errorf("bert: onnx runtime session: %w", err)
	}
	batch := opts.Batch
	if batch <= 0 {
		batch = DefaultBatch
	}
	return &Model{cfg: cfg, tok: tok, batch: batch, provider: used, note: note, sess: sess}, nil
}

// prefetchOrder is the order Build reads the weights in.
func prefetchOrder(c Config) []string {
	names := []string{c.Prefix + "embeddings.word_embeddings.weight", c.Prefix + "embeddings.position_embeddings.weight",
		c.Prefix + "embeddings.token_type_embeddings.weight", c.Prefix + "embeddings.LayerNorm.weight", c.Prefix + "embeddings.LayerNorm.bias"}
	for l := 0; l < c.Layers; l++ {
		for _, p := range []string{PartQuery + ".weight", PartQuery + ".bias", PartKey + ".weight", PartKey + ".bias", PartValue + ".weight", PartValue + ".bias",
			PartAttnOut + ".weight", PartAttnOut + ".bias", "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
			PartInter + ".weight", PartInter + ".bias", PartOutput + ".weight", PartOutput + ".bias", "output.LayerNorm.weight", "output.LayerNorm.bias"} {
			names = append(names, c.layer(l, p))
		}
	}
	return names
}

// isLinear says whether the named tensor is a block linear weight (read
// as its transpose by Build).
func isLinear(name string) bool {
	if !strings.HasSuffix(name, ".weight") {
		return false
	}
	for _, p := range []string{PartQuery, PartKey, PartValue, PartAttnOut, PartInter, PartOutput} {
		if strings.HasSuffix(name, "."+p+".weight") {
			return true
		}
	}
	return false
}

// Config returns the model's hyper-parameters.
func (m *Model) Config() Config { return m.cfg }

// Provider returns the execution provider in use.
func (m *Model) Provider() string { return m.provider }

// Tokenizer returns the model's tokenizer.
func (m *Model) Tokenizer() *Tokenizer { return m.tok }

// Embed returns one embedding (Config.Hidden float32) per sentence:
// tokenized with [CLS]/[SEP] and truncated to Config.MaxSeqLen, run in
// batches of sentences of similar length (padded to the batch's longest),
// mean-pooled over the attention mask and, when the pipeline has
// Normalize, scaled to unit L2 norm, as sentence-transformers encode does.
func (m *Model) Embed(ctx context.Context, sentences []string) ([][]float32, error) {
	seqs := make([][]int32, len(sentences))
	for i, s := range sentences {
		ids, err := m.tok.EncodeSentence(s, m.cfg.MaxSeqLen)
		if err != nil {
			return nil, fmt.Errorf("bert: sentence %d: %w", i, err)
		}
		seqs[i] = ids
	}
	return m.EmbedTokens(ctx, seqs)
}

// EmbedTokens is Embed on tokenized sentences ([CLS] ... [SEP], at most
// Config.MaxSeqLen each).
func (m *Model) EmbedTokens(ctx context.Context, seqs [][]int32) ([][]float32, error) {
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
	}
	// Longest first, as sentence-transformers sorts (by text length).
	sort.SliceStable(order, func(a, b int) bool { return len(seqs[order[a]]) > len(seqs[order[b]]) })
	out := make([][]float32, len(seqs))
	for lo := 0; lo < len(order); lo += m.batch {
		idx := order[lo:min(lo+m.batch, len(order))]
		batch := make([][]int32, len(idx))
		for j, i := range idx {
			batch[j] = seqs[i]
		}
		embs, err := m.embedBatch(ctx, batch)
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			out[i] = embs[j]
		}
	}
	return out, nil
}

// Hidden runs one batch (padded with id 0 to its longest sequence) and
// returns last_hidden_state [batch, seq, hidden] and seq.
func (m *Model) Hidden(ctx context.Context, seqs [][]int32) ([]float32, int, error) {
	if len(seqs) == 0 {
		return nil, 0, fmt.Errorf("bert: no sequences")
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	B, S, D := len(seqs), 0, m.cfg.Hidden
	for i, s := range seqs {
		if len(s) == 0 || len(s) > m.cfg.MaxPositions {
			return nil, 0, fmt.Errorf("bert: sequence %d has %d tokens (1..%d)", i, len(s), m.cfg.MaxPositions)
		}
		S = max(S, len(s))
	}
	ids := make([]int64, B*S)
	mask := make([]int64, B*S)
	for b, s := range seqs {
		for i, t := range s {
			if t < 0 || int(t) >= m.cfg.Vocab {
				return nil, 0, fmt.Errorf("bert: token %d at position %d outside the vocabulary [0, %d)", t, i, m.cfg.Vocab)
			}
			ids[b*S+i], mask[b*S+i] = int64(t), 1
		}
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.sess == nil {
		return nil, 0, ErrClosed
	}
	hidden := make([]float32, B*S*D)
	if err := runSession(ctx, m.sess, B, S, ids, mask, []outBuf{{hidden, []int64{int64(B), int64(S), int64(D)}}}); err != nil {
		return nil, 0, err
	}
	return hidden, S, nil
}

func (m *Model) embedBatch(ctx context.Context, seqs [][]int32) ([][]float32, error) {
	hidden, S, err := m.Hidden(ctx, seqs)
	if err != nil {
		return nil, err
	}
	return Pool(hidden, seqs, S, m.cfg.Hidden, m.cfg.Normalize), nil
}

// Pool mean-pools hidden [batch, seq, d] over the first len(seqs[b])
// positions of each sequence (the attention mask) and, with normalize,
// divides by max(L2 norm, 1e-12) (torch.nn.functional.normalize), in
// float32 as sentence-transformers does.
func Pool(hidden []float32, seqs [][]int32, seq, d int, normalize bool) [][]float32 {
	out := make([][]float32, len(seqs))
	for b, s := range seqs {
		e := make([]float32, d)
		for t := range s {
			row := hidden[(b*seq+t)*d : (b*seq+t+1)*d]
			for j, v := range row {
				e[j] += v
			}
		}
		n := float32(max(len(s), 1))
		for j := range e {
			e[j] /= n
		}
		if normalize {
			var ss float64
			for _, v := range e {
				ss += float64(v) * float64(v)
			}
			norm := float32(max(math.Sqrt(ss), 1e-12))
			for j := range e {
				e[j] /= norm
			}
		}
		out[b] = e
	}
	return out
}

type outBuf struct {
	data  []float32
	shape []int64
}

// runSession runs sess on ids and mask [B, S] into outs; the end of ctx
// terminates the run.
func runSession(ctx context.Context, sess *ort.DynamicAdvancedSession, B, S int, ids, mask []int64, outs []outBuf) error {
	shape := ort.NewShape(int64(B), int64(S))
	idT, err := ort.NewTensor(shape, ids)
	if err != nil {
		return fmt.Errorf("bert: input tensor: %w", err)
	}
	defer idT.Destroy()
	maskT, err := ort.NewTensor(shape, mask)
	if err != nil {
		return fmt.Errorf("bert: mask tensor: %w", err)
	}
	defer maskT.Destroy()
	vals := make([]ort.Value, len(outs))
	for i, o := range outs {
		t, err := ort.NewTensor(ort.NewShape(o.shape...), o.data)
		if err != nil {
			return fmt.Errorf("bert: output tensor: %w", err)
		}
		defer t.Destroy()
		vals[i] = t
	}
	return ortenv.RunCancellable(ctx, sess, []ort.Value{idT, maskT}, vals, "bert: run")
}

// Close releases the session and the tokenizer.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sess == nil {
		return nil
	}
	err := m.sess.Destroy()
	m.sess = nil
	m.tok.Close()
	return err
}
