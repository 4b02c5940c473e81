//go:build cgo

package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/nwc-project/nwc/eval"
	"github.com/nwc-project/nwc/eval/calib"
	"github.com/nwc-project/nwc/eval/report"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

// benchPoint is one compression to measure: a codec at a bit setting.
type benchPoint struct {
	codec   string  // CompressOptions.Codec
	bits    float64 // CompressOptions.Bits (unused by nwc:NAME)
	method  string  // report series
	setting string
}

// benchPoints expands the --run specs (or the --codecs x --bits product):
// CODEC=B1,B2 gives one point per bit setting; "nwc" gives one point per
// shipped codec, "nwc=NAME1,NAME2" the named ones.
func benchPoints(runs []string, codecs, bitsList string) ([]benchPoint, error) {
	if len(runs) == 0 {
		for _, c := range strings.Split(codecs, ",") {
			runs = append(runs, strings.TrimSpace(c)+"="+bitsList)
		}
	}
	var pts []benchPoint
	for _, r := range runs {
		codec, list, hasList := strings.Cut(strings.TrimSpace(r), "=")
		if codec == "nwc" {
			var names []string
			if hasList {
				names = strings.Split(list, ",")
			} else {
				for _, c := range ortcodec.List(nil) {
					names = append(names, c.Name)
				}
				if len(names) == 0 {
					return nil, fmt.Errorf("bench: --run nwc: %w", ortcodec.ErrNoCodec)
				}
			}
			for _, n := range names {
				n = strings.TrimSpace(n)
				// one series per codec family (nwc-w128d2, nwc-gain, ...)
				pts = append(pts, benchPoint{codec: "nwc:" + n, method: ortcodec.Family(n), setting: n})
			}
			continue
		}
		if !hasList {
			return nil, fmt.Errorf("bench: --run %q: want CODEC=B1,B2,...", r)
		}
		for _, f := range strings.Split(list, ",") {
			b, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil {
				return nil, fmt.Errorf("bench: --run %q: %w", r, err)
			}
			pts = append(pts, benchPoint{codec: codec, bits: b, method: codec, setting: fmt.Sprintf("%g bits", b)})
		}
	}
	return pts, nil
}

// runBenchRD is `nwc bench rd` (args[0] is "rd").
func runBenchRD(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench rd", flag.ContinueOnError)
	sw := newBenchSweep(fs, "rd", "smollm2-135m", "reference model", "rtn-g128,rtn-row", "2,3,4,5,6,8")
	seqLen := fs.Int("seq-len", eval.DefaultSeqLen, "window length")
	maxWin := fs.Int("max-windows", 4, "windows evaluated per point (0 = the whole text)")
	sinkWeight := fs.Float64("sink-weight", calib.DefaultSinkWeight, "weight of the first token of every calibration window in H")
	if _, err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	model, lf := *sw.model, sw.lf
	rep := &report.Report{}
	points, stem, found, err := sw.start(rep)
	if err != nil {
		return err
	}
	if found && (rep.Model != model || rep.SeqLen != *seqLen) {
		return fmt.Errorf("bench: --resume: %s.json is for model %s, seq-len %d", stem, rep.Model, rep.SeqLen)
	}
	rep.Title = fmt.Sprintf("%s: bits/weight vs quality", model)
	rep.Model, rep.Text, rep.SeqLen = model, "WikiText-2 test (GPTQ convention)", *seqLen
	rep.Command = "bin/nwc " + strings.Join(append([]string{"bench"}, args...), " ")

	src, _, err := loader.Open(model, codec.Env{})
	if err != nil {
		return err
	}
	defer src.Close()
	tok, err := tokenizer.ForSource(src)
	if err != nil {
		return err
	}
	defer tok.Close()
	refModel, _, err := openLM(model, lf)
	if err != nil {
		return err
	}
	defer refModel.Close()
	tmp, err := os.MkdirTemp("", "nwc-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ref := newMemoLM(refModel, tmp)

	note := noter(&rep.Notes)
	hess, err := sw.calibrate(ctx, src, points, rep, *sinkWeight, note, func(info *calibInfo) string {
		return fmt.Sprintf("gptq-g128, ecsq, nwc: H = X^T X from %d tokens (%d windows of %d) of %s, first token of each window weighted x%g (attention sink, docs/CALIBRATION.md); rtn-g128 uses no calibration.",
			info.Tokens, info.Windows, info.Tokens/int64(max(info.Windows, 1)), info.Text, info.SinkWeight)
	})
	if err != nil {
		return err
	}
	note(fmt.Sprintf("nwc, ecsq: LDLQ error feedback every %d columns; gptq-g128: column by column (GPTQ), groups of 128; quantization levels of nwc: 88.9/10/1/0.1 %% of the columns by diag(H).", sw.feedbackBlock()))
	note("bits/weight counts the section bytes of the transformer blocks' linear weights (payload, scales, level maps, headers, checksums); the whole-file figure adds every other tensor (embeddings, norms: kept losslessly in their stored type).")
	opts := eval.Options{SeqLen: *seqLen, MaxWindows: *maxWin}
	base, err := eval.Evaluate(ctx, ref, nil, tok, eval.Config{Model: model, Options: opts})
	if err != nil {
		return err
	}
	rep.RefPerplexity, rep.Windows = base.Perplexity, base.Windows
	// Every window's reference logits are in the memo now: the reference
	// model's memory goes back before the candidates load.
	ref.release()
	if err := refModel.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "reference %s: perplexity %.4f over %d tokens\n", model, base.Perplexity, base.TokensScored)
	return sw.measure(points, rep, stem, note, func(p benchPoint) (string, error) {
		pt, err := benchOne(ctx, src, ref, tok, p, hess, *sw.fbBlock, tmp, model, opts, lf)
		if err != nil {
			return "", err
		}
		rep.Points = append(rep.Points, pt)
		return fmt.Sprintf("%.3f bits/weight, perplexity %.4f, KL %.5f (compress %.0f s, load %.0f s)",
			pt.BitsPerWeight, pt.Perplexity, pt.MeanKL, pt.CompressSeconds, pt.LoadSeconds), nil
	})
}

// benchOne compresses src with one codec setting, loads the file through
// the runtime (decoding every tensor) and evaluates it against ref.
func benchOne(ctx context.Context, src tensor.Source, ref eval.LM, tok eval.Tokenizer, p benchPoint, hess loader.HessianFunc, fbBlock int, tmp, model string, opts eval.Options, lf lmFlags) (report.Point, error) {
	path := filepath.Join(tmp, "point.nwc")
	defer os.Remove(path)
	co := loader.CompressOptions{Codec: p.codec, Bits: p.bits, FeedbackBlock: fbBlock}
	if usesCalibration(p.codec) {
		co.Hessian = hess
	}
	sum, err := loader.Compress(ctx, src, path, co)
	if err != nil {
		return report.Point{}, err
	}
	lb := sum.LinearBitsPerWeight
	fileBits := sum.BitsPerWeight // whole file: every byte over every weight
	lm, loadSecs, err := openLM(path, lf)
	if err != nil {
		return report.Point{}, err
	}
	defer lm.Close()
	r, err := eval.Evaluate(ctx, lm, ref, tok, eval.Config{Model: path, Reference: model, Options: opts})
	if err != nil {
		return report.Point{}, err
	}
	pt := report.Point{Method: p.method, Setting: p.setting, BitsPerWeight: lb, FileBits: fileBits,
		Perplexity: r.Perplexity, Tokens: int(r.TokensScored), CompressSeconds: sum.Seconds, LoadSeconds: loadSecs}
	if r.MeanKL != nil {
		pt.MeanKL = *r.MeanKL
	}
	return pt, nil
}

// codecProvenance says which models a shipped codec was trained on (its
// card.json).
func codecProvenance(name string) string {
	fsys, name, err := ortcodec.Resolve(nil, name)
	if err != nil {
		return fmt.Sprintf("nwc %s: %v", name, err)
	}
	c, err := ortcodec.ReadCard(fsys, name)
	if err != nil {
		return fmt.Sprintf("nwc %s: card: %v", name, err)
	}
	var card struct {
		Training struct {
			Models   []string `json:"models"`
			Excluded []string `json:"excluded_models"`
			Lambda   float64  `json:"lambda"`
		} `json:"training"`
	}
	if err := json.Unmarshal(c.Raw, &card); err != nil {
		return fmt.Sprintf("nwc %s: card: %v", name, err)
	}
	s := fmt.Sprintf("nwc %s (lambda %g): trained on %s", name, card.Training.Lambda, strings.Join(card.Training.Models, ", "))
	if len(card.Training.Excluded) > 0 {
		s += fmt.Sprintf("; %s excluded from training (checked by tensor hashes)", strings.Join(card.Training.Excluded, ", "))
	}
	return s + "."
}

// loadResume reads stem.json into rep for --resume; found is false when
// there is none yet.
func loadResume(stem string, rep any) (found bool, err error) {
	b, err := os.ReadFile(stem + ".json")
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bench: --resume: %w", err)
	}
	if err := json.Unmarshal(b, rep); err != nil {
		return false, fmt.Errorf("bench: --resume: %s.json: %w", stem, err)
	}
	return true, nil
}

// noter returns a function that appends a note to notes once (notes
// already there, from --resume, count).
func noter(notes *[]string) func(string) {
	seen := map[string]bool{}
	for _, n := range *notes {
		seen[n] = true
	}
	return func(n string) {
		if !seen[n] {
			seen[n] = true
			*notes = append(*notes, n)
		}
	}
}

// writeReport writes stem.md, stem.json and, when it has points, stem.png.
func writeReport(rep sweepReport, stem string) error {
	png := rep.WritePlot
	if rep.Len() == 0 {
		png = func(string) error { return nil }
	}
	return writeReportFiles(stem, rep.WriteMarkdown, rep, png)
}

// memoLM remembers the logits of every window it has computed, so that the
// reference model runs once per window however many candidates are compared
// with it. Up to memoBudget bytes stay in memory; the rest are spilled to
// files in dir (a 262k-token vocabulary makes 2 GB of logits per 2048-token
// window) and read back when asked for again. Once every window has been
// computed, release drops the model (its session and weights: with a 262k
// vocabulary the reference and a candidate side by side do not fit in 24 GB).
type memoLM struct {
	mu     sync.Mutex
	lm     eval.LM // nil once released
	vocab  int
	dir    string
	budget int64
	used   int64
	cache  map[uint64][]float32
	files  map[uint64]string
}

// memoBudget is the memory memoLM keeps logits in before spilling to disk.
const memoBudget = 2 << 30

func newMemoLM(lm eval.LM, dir string) *memoLM {
	return &memoLM{lm: lm, vocab: lm.Vocab(), dir: dir, budget: memoBudget, cache: map[uint64][]float32{}, files: map[uint64]string{}}
}

func (m *memoLM) Vocab() int { return m.vocab }

// release forgets the model: from now on only the windows computed so far
// can be asked for (others are an error). The caller closes the model.
func (m *memoLM) release() {
	m.mu.Lock()
	m.lm = nil
	m.mu.Unlock()
}

func (m *memoLM) Logits(ctx context.Context, tokens []int32) ([]float32, error) {
	h := fnv.New64a()
	var b [4]byte
	for _, t := range tokens {
		binary.LittleEndian.PutUint32(b[:], uint32(t))
		h.Write(b[:])
	}
	key := h.Sum64()
	m.mu.Lock()
	l, ok := m.cache[key]
	file, spilled := m.files[key]
	lm := m.lm
	m.mu.Unlock()
	if ok {
		return l, nil
	}
	if spilled {
		l, err := readF32File(file, len(tokens)*m.vocab)
		if err != nil {
			return nil, fmt.Errorf("bench: reference logits spilled to %s: %w", file, err)
		}
		return l, nil
	}
	if lm == nil {
		return nil, errors.New("bench: reference logits of a window that was not computed before the reference model was released")
	}
	l, err := lm.Logits(ctx, tokens)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if size := int64(len(l)) * 4; m.used+size <= m.budget || m.dir == "" {
		m.cache[key] = l
		m.used += size
		return l, nil
	}
	file = filepath.Join(m.dir, fmt.Sprintf("ref-logits-%016x.f32", key))
	if err := writeF32File(file, l); err != nil {
		return nil, fmt.Errorf("bench: spilling reference logits: %w", err)
	}
	m.files[key] = file
	return l, nil
}

// spillChunk is the buffer size of the spill files' reads and writes (no
// second whole-window copy in memory).
const spillChunk = 1 << 20

func writeF32File(path string, v []float32) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	var buf []byte
	for i := 0; i < len(v); i += spillChunk / 4 {
		buf = tensor.F32Bytes(v[i:min(len(v), i+spillChunk/4)], buf)
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// readF32File reads n float32 values, refusing a file of another size.
func readF32File(path string, n int) ([]float32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() != int64(n)*4 {
		return nil, fmt.Errorf("%d bytes, want %d", st.Size(), int64(n)*4)
	}
	out := make([]float32, n)
	buf := make([]byte, spillChunk)
	for i := 0; i < n; i += spillChunk / 4 {
		k := min(n-i, spillChunk/4)
		if _, err := io.ReadFull(f, buf[:4*k]); err != nil {
			return nil, err
		}
		if _, err := tensor.ToFloat32(tensor.F32, buf[:4*k], int64(k), out[i:i+k]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
