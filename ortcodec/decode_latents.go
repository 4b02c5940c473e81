package ortcodec

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/entropy"
)

// The decode pipeline of one nwc tensor [m, n] (DecodeMatrixInto):
//
//	payload --rANS, every stream in parallel--> integer latents, level-major (4 bytes/weight)
//	batches of chunks, one per worker (a decoder session, or a goroutine for KindGain):
//	  latents + medians --> the session's input tensor (no intermediate array)
//	  --> decoder network (ONNX Runtime) or the latent gains (Go)
//	  --> x row scale --> dst, the caller's float32 output
//
// The working set beyond the output is the payload (~bits/8 bytes per
// weight), the integer latents (4 bytes per weight), and the fixed batch
// buffers of the sessions: about 4.5 bytes per weight at 4 bits/weight.

// header is a parsed nwc payload header.
type header struct {
	m, n   int
	levels []uint8 // quality level of each input column
	scales []byte  // m fp16 row scales
	body   []byte  // the level streams
}

func parseHeader(shape []int64, payload []byte) (header, error) {
	if len(shape) != 2 || shape[0] <= 0 || shape[1] <= 0 || shape[0]%D != 0 || shape[0]*shape[1] > 1<<34 {
		return header{}, fmt.Errorf("%w: nwc shape %v", codec.ErrCorrupt, shape)
	}
	m, n := int(shape[0]), int(shape[1])
	side := 1 + 2*m + (n+3)/4
	if len(payload) < side || payload[0] != nwcPayloadVersion {
		return header{}, fmt.Errorf("%w: nwc payload of %d bytes (header needs %d)", codec.ErrCorrupt, len(payload), side)
	}
	return header{m: m, n: n, levels: codec.ReadLevels(payload[1+2*m:], n), scales: payload[1 : 1+2*m], body: payload[side:]}, nil
}

// latentModel is what decoding the latents of a codec needs: its per-level
// entropy tables, their medians, and for a KindGain codec its constants.
type latentModel struct {
	// symPool recycles the integer-latent buffers of finished decodes
	// (*[]int32), so loading a model does not fault in fresh memory for
	// every tensor.
	symPool sync.Pool

	tables *entropy.Tables // all rows of entropy.json
	levels [NumLevels]*entropy.Tables
	med    [NumLevels][D]float32
	gain   *gainParams
}

// setMedians fills med from the level tables.
func (lm *latentModel) setMedians() {
	for q := range lm.levels {
		for ch := range D {
			lm.med[q][ch] = lm.levels[q].Channels[ch].Median
		}
	}
}

// newMatrixJob parses an nwc payload of a [m, n] tensor, entropy-decodes
// its latents (every stream in parallel) and prepares the output dst
// (reused when it holds m*n values).
func (lm *latentModel) newMatrixJob(st *stage.Times, shape []int64, payload []byte, dst []float32, transposed bool) (*matrixJob, error) {
	t0 := st.Start()
	h, err := parseHeader(shape, payload)
	if err != nil {
		return nil, err
	}
	m, n, kc := h.m, h.n, h.m/D
	var cnt [NumLevels]int
	for _, l := range h.levels {
		cnt[l] += kc
	}
	// Entropy decoding (on error the buffer is simply dropped): level l's symbols at syms[base[l]:], in the order
	// of its columns.
	syms := lm.symbols(m * n)
	var base [NumLevels + 1]int
	body := h.body
	for l := 0; l < NumLevels; l++ {
		base[l+1] = base[l] + D*cnt[l]
		sz, k := binary.Uvarint(body)
		if k <= 0 || sz > uint64(len(body)-k) {
			return nil, fmt.Errorf("%w: level %d stream length", entropy.ErrCorrupt, l)
		}
		if _, err := entropy.DecodeStreams(lm.levels[l], body[k:k+int(sz)], D*cnt[l], syms[base[l]:base[l+1]:base[l+1]], 0); err != nil {
			return nil, fmt.Errorf("ortcodec: level %d: %w", l, err)
		}
		body = body[k+int(sz):]
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last level", entropy.ErrCorrupt, len(body))
	}
	t0 = st.Since(stage.Entropy, t0, int64(m*n))
	colOff := make([]int, n)
	pos := base
	for j, l := range h.levels {
		colOff[j] = pos[l]
		pos[l] += kc * D
	}
	r := make([]float32, m)
	for i := range r {
		r[i] = tensor.F16ToF32(binary.LittleEndian.Uint16(h.scales[2*i:]))
	}
	if cap(dst) < m*n {
		dst = make([]float32, m*n)
	}
	st.Since(stage.Rescale, t0, 0)
	return &matrixJob{lm: lm, transposed: transposed, symsBuf: syms, st: st, m: m, n: n, kc: kc, levels: h.levels, syms: syms, colOff: colOff, r: r, w: dst[:m*n]}, nil
}

// matrixJob is one tensor's batches.
type matrixJob struct {
	lm         *latentModel
	transposed bool    // w is W^T [n, m] (row j = column j of W), not W [m, n]
	symsBuf    []int32 // syms' buffer, back to lm's pool on release
	st         *stage.Times
	m, n       int
	kc         int // chunks per column
	levels     []uint8
	syms       []int32
	colOff     []int
	r          []float32
	w          []float32
}

// A batch is a range [lo, hi) of chunks in the column-major chunk order of
// the payload (chunk i holds rows 16(i%kc).. of column i/kc), which is also
// the order of the network's batch tensors. Batches are whole columns when
// the batch size allows, so store and gainBatch can write every row in
// consecutive columns.

// fill dequantizes chunks [lo, hi) into in and their levels into q.
func (j *matrixJob) fill(lo, hi int, in []float32, q []int64) {
	med := &j.lm.med
	for i := lo; i < hi; i++ {
		col, k := i/j.kc, i%j.kc
		l := j.levels[col]
		s := j.syms[j.colOff[col]+k*D:][:D]
		y := in[(i-lo)*D:][:D]
		md := &med[l]
		for t := range D {
			y[t] = float32(s[t]) + md[t]
		}
		q[i-lo] = int64(l)
	}
}

// store writes the decoded chunks [lo, hi) (x in chunk order) times the
// row scales into w, row block by row block (transposed: chunk by chunk, a
// contiguous run of column col of W, which is row col of the transpose).
func (j *matrixJob) store(lo, hi int, x []float32) {
	if j.transposed {
		m, kc := j.m, j.kc
		for i := lo; i < hi; i++ {
			col, k := i/kc, i%kc
			xs := x[(i-lo)*D:][:D]
			rs := j.r[k*D:][:D]
			w := j.w[col*m+k*D:][:D]
			for t := range D {
				w[t] = xs[t] * rs[t]
			}
		}
		return
	}
	n, kc := j.n, j.kc
	for k := 0; k < kc; k++ {
		rs := j.r[k*D:][:D]
		w := j.w[k*D*n:]
		for col := lo / kc; col <= (hi-1)/kc; col++ {
			i := col*kc + k
			if i < lo || i >= hi {
				continue
			}
			xs := x[(i-lo)*D:][:D]
			for t := range D {
				w[t*n+col] = xs[t] * rs[t]
			}
		}
	}
}

// gainBatch decodes chunks [lo, hi) of a KindGain codec in one pass:
// latent -> y_hat -> gains -> row scale, row block by row block.
func (j *matrixJob) gainBatch(lo, hi int) {
	g, med, n, kc := j.lm.gain, &j.lm.med, j.n, j.kc
	if j.transposed {
		m := j.m
		for i := lo; i < hi; i++ {
			col, k := i/kc, i%kc
			l := j.levels[col]
			s := j.syms[j.colOff[col]+k*D:][:D]
			md, dg := &med[l], &g.dec[l]
			rs := j.r[k*D:][:D]
			w := j.w[col*m+k*D:][:D]
			for t := range D {
				y := float32(s[t]) + md[t]
				x := float32(float32(y*dg[t])*g.std) + g.mean
				w[t] = x * rs[t]
			}
		}
		return
	}
	for k := 0; k < kc; k++ {
		rs := j.r[k*D:][:D]
		w := j.w[k*D*n:]
		for col := lo / kc; col <= (hi-1)/kc; col++ {
			i := col*kc + k
			if i < lo || i >= hi {
				continue
			}
			l := j.levels[col]
			s := j.syms[j.colOff[col]+k*D:][:D]
			md, dg := &med[l], &g.dec[l]
			for t := range D {
				y := float32(s[t]) + md[t]
				x := float32(float32(y*dg[t])*g.std) + g.mean
				w[t*n+col] = x * rs[t]
			}
		}
	}
}

// gainBatchSize is the batch of a KindGain decode: 16 whole columns (a
// 64-byte line of every row of the output).
func (j *matrixJob) gainBatchSize() int { return 16 * j.kc }

// decodeGain decodes every batch of a KindGain job on GOMAXPROCS goroutines.
func (j *matrixJob) decodeGain(ctx context.Context) error {
	batch := j.gainBatchSize()
	return forBatches(ctx, j.n*j.kc, batch, runtime.GOMAXPROCS(0), func(_ context.Context, lo, hi int) error {
		t0 := j.st.Start()
		j.gainBatch(lo, hi)
		j.st.Since(stage.Network, t0, int64((hi-lo)*D))
		return nil
	})
}

// decodeGainMatrix decodes an nwc payload of a KindGain codec into W [m, n]
// (or its transpose) in Go, reusing dst when it holds m*n values.
func (lm *latentModel) decodeGainMatrix(ctx context.Context, shape []int64, payload []byte, dst []float32, transposed bool) ([]float32, error) {
	job, err := lm.newMatrixJob(stage.From(ctx), shape, payload, dst, transposed)
	if err != nil {
		return nil, err
	}
	defer job.release()
	if err := job.decodeGain(ctx); err != nil {
		return nil, err
	}
	return job.w, nil
}

// forBatches runs fn on the batches [lo, hi) of total chunks, batch at a
// time (whole columns when batch is a multiple of the column), on up to
// workers goroutines (the caller's included); the first error cancels the
// rest and is returned.
func forBatches(ctx context.Context, total, batch, workers int, fn func(ctx context.Context, lo, hi int) error) error {
	nb := (total + batch - 1) / batch
	workers = max(1, min(workers, nb))
	var (
		next  atomic.Int64
		once  sync.Once
		first error
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := func() {
		defer wg.Done()
		for {
			b := int(next.Add(1) - 1)
			if b >= nb || ctx.Err() != nil {
				return
			}
			if err := fn(ctx, b*batch, min(total, (b+1)*batch)); err != nil {
				once.Do(func() { first = err; cancel() })
				return
			}
		}
	}
	wg.Add(workers)
	for range workers - 1 {
		go work()
	}
	work()
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// levelTables splits the rows of entropy.json into per-level tables: the
// optional "levels" field is 1 (16 channels shared by every quality level)
// or 4 (64 channels, entry q*16+c for channel c of a level-q chunk).
func levelTables(name string, data []byte, t *entropy.Tables) ([NumLevels]*entropy.Tables, error) {
	var out [NumLevels]*entropy.Tables
	path := name + "/" + EntropyFile
	var hdr struct {
		Levels *int `json:"levels"`
	}
	if err := json.Unmarshal(data, &hdr); err != nil {
		return out, fmt.Errorf("%w: %s: %v", ErrModel, path, err)
	}
	levels := 1
	if hdr.Levels != nil {
		levels = *hdr.Levels
	}
	if (levels != 1 && levels != NumLevels) || t.NumChannels() != D*levels {
		return out, fmt.Errorf("%w: %s: %d channels with levels %d, want %d (levels 1) or %d (levels %d)",
			ErrModel, path, t.NumChannels(), levels, D, D*NumLevels, NumLevels)
	}
	for q := range out {
		off := 0
		if levels == NumLevels {
			off = q * D
		}
		out[q] = &entropy.Tables{Precision: t.Precision, Channels: t.Channels[off : off+D]}
	}
	return out, nil
}

// findCodec resolves the trained codec an nwc section's parameters name
// (in env.Codecs or the default search) and checks that its content hash is
// the one the file was made with.
func findCodec(env codec.Env, params []byte) (fsys fs.FS, name string, err error) {
	name, hash, err := parseNeuralParams(params)
	if err != nil {
		return nil, "", err
	}
	if strings.ContainsAny(name, `/\`) {
		return nil, "", fmt.Errorf("%w: nwc codec name %q is a path", codec.ErrCorrupt, name)
	}
	if fsys, name, err = Resolve(env.Codecs, name); err != nil {
		return nil, "", err
	}
	id, err := Identify(fsys, name)
	if err != nil {
		return nil, "", err
	}
	if id.Hash != hash {
		return nil, "", fmt.Errorf("%w: codec %q in %s is not the one this file was made with (content hash %x, file wants %x)",
			codec.ErrCodecMismatch, name, fsName(fsys), id.Hash[:6], hash[:6])
	}
	return fsys, name, nil
}

// loadLatentModel reads what decoding latents needs from the codec folder
// name in fsys: entropy.json (per-level tables, medians) and card.json (the
// architecture kind, and a KindGain codec's constants). It needs no ONNX
// Runtime.
func loadLatentModel(fsys fs.FS, name string) (*latentModel, error) {
	ent, err := fs.ReadFile(fsys, path.Join(name, EntropyFile))
	if err != nil {
		return nil, fmt.Errorf("%w: codec %s: %v", ErrModel, name, err)
	}
	lm := &latentModel{}
	if lm.tables, err = entropy.ParseTables(ent); err != nil {
		return nil, fmt.Errorf("ortcodec: %s: %w", name, err)
	}
	if lm.levels, err = levelTables(name, ent, lm.tables); err != nil {
		return nil, err
	}
	card, err := ReadCard(fsys, name)
	if err != nil {
		return nil, err
	}
	if _, lm.gain, err = parseKind(name, card.Raw); err != nil {
		return nil, err
	}
	lm.setMedians()
	return lm, nil
}

// decodeF32Section runs decode (which fills and returns a []float32 of the
// section's values, reusing its argument when large enough) so that the
// values land straight in dst's bytes when the machine allows a float32
// view of them, and returns the section's RawSize bytes.
func decodeF32Section(s codec.Section, dst []byte, decode func(v []float32) ([]float32, error)) ([]byte, error) {
	if cap(dst) < int(s.RawSize) {
		dst = make([]byte, s.RawSize)
	}
	dst = dst[:s.RawSize]
	v, view := tensor.Float32View(dst, int(s.RawSize/4))
	w, err := decode(v)
	if err != nil {
		return nil, err
	}
	if !view {
		return tensor.F32Bytes(w, dst), nil
	}
	return dst, nil
}

// symbols returns a buffer of n int32 (recycled when one is large enough).
func (lm *latentModel) symbols(n int) []int32 {
	if b, ok := lm.symPool.Get().(*[]int32); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	return make([]int32, n)
}

// release gives the job's latent buffer back for the next decode; the job
// must not be used afterwards.
func (j *matrixJob) release() {
	b := j.symsBuf[:0]
	j.syms, j.symsBuf = nil, nil
	j.lm.symPool.Put(&b)
}
