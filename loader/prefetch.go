package loader

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/nwc-project/nwc/loader/tensor"
)

// PrefetchOptions configure Prefetch.
type PrefetchOptions struct {
	// Ahead is the most tensors decoded (or being decoded) ahead of the
	// consumer and not yet taken; 0 means min(GOMAXPROCS, 4) and at least 2.
	// Memory beyond the consumer's own: at most Ahead decoded tensors plus
	// the working set of the decodes in flight.
	Ahead int
	// Order is the order the consumer is expected to read the tensors in
	// (nil: the source's storage order). A read out of that order is
	// decoded on the spot; nothing is lost but overlap.
	Order []string
	// Transposed, when set, names the 2-D tensors the consumer reads with
	// ReadFloat32T: they are prefetched as their float32 transpose
	// (decoded straight into that layout when the source can).
	Transposed func(name string) bool
}

// Prefetcher is a tensor.Source that decodes the tensors of another source
// in the background, in the expected read order and up to Ahead at a time,
// so that the consumer (the runtime's graph builder, the safetensors writer,
// a caller) works on one tensor while the next ones decode. Every tensor is
// handed out once from the prefetch; a second read of the same tensor, or a
// read out of order, goes to the source directly. Decoded bytes are exactly
// the source's (the same ReadRaw call, on another goroutine).
//
// Safe for concurrent use; Close stops the background work (and closes the
// wrapped source only when Prefetch was told to own it).
type Prefetcher struct {
	src   tensor.Source
	infos []tensor.Info
	own   bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	order      []string
	next       int                // next index of order to start
	pending    map[string]*future // started, not taken
	ahead      int
	transposed func(name string) bool
	// free holds decoded buffers the consumer is done with (ReadFloat32
	// converted them into its own slice): the next decodes write into them
	// instead of fresh memory (at most ahead+1 kept).
	free [][]byte
}

type future struct {
	done chan struct{}
	raw  []byte
	err  error
	// buf is the buffer the decode was given: raw may be recycled only
	// when the source decoded into it (not when it returned memory of its
	// own, which may be shared).
	buf []byte
	// isT: the future decodes the float32 transpose into t, not raw
	// (PrefetchOptions.Transposed).
	isT bool
	t   []float32
}

// Prefetch wraps src (closing src stays the caller's job unless own is
// true). Background decoding starts at once.
func Prefetch(ctx context.Context, src tensor.Source, own bool, opts PrefetchOptions) *Prefetcher {
	if opts.Ahead <= 0 {
		opts.Ahead = max(2, min(runtime.GOMAXPROCS(0), 4))
	}
	order := opts.Order
	if order == nil {
		for _, ti := range src.Tensors() {
			order = append(order, ti.Name)
		}
	}
	c, cancel := context.WithCancel(ctx)
	p := &Prefetcher{src: src, infos: src.Tensors(), own: own, ctx: c, cancel: cancel,
		order: order, pending: map[string]*future{}, ahead: opts.Ahead, transposed: opts.Transposed}
	p.mu.Lock()
	p.fill()
	p.mu.Unlock()
	return p
}

// fill starts decodes until Ahead are pending (p.mu held).
func (p *Prefetcher) fill() {
	for len(p.pending) < p.ahead && p.next < len(p.order) && p.ctx.Err() == nil {
		name := p.order[p.next]
		p.next++
		if _, dup := p.pending[name]; dup {
			continue
		}
		if _, ok := tensor.Find(p.infos, name); !ok {
			continue // let the consumer's own read report it
		}
		f := &future{done: make(chan struct{}), isT: p.transposed != nil && p.transposed(name)}
		if !f.isT {
			f.buf = p.reuse(name)
		}
		p.pending[name] = f
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer close(f.done)
			if err := p.ctx.Err(); err != nil {
				f.err = err
				return
			}
			if f.isT {
				f.t, f.err = p.readT(p.ctx, name, nil)
			} else {
				f.raw, f.err = p.src.ReadRaw(name, f.buf)
			}
		}()
	}
}

// reuse returns the smallest free buffer that holds the stored bytes of
// name, or nil (p.mu held).
func (p *Prefetcher) reuse(name string) []byte {
	ti, _ := tensor.Find(p.infos, name)
	need, err := ti.DType.StorageBytes(ti.NumElements())
	if err != nil {
		return nil
	}
	best := -1
	for i, b := range p.free {
		if int64(cap(b)) >= need && (best < 0 || cap(b) < cap(p.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return make([]byte, 0, need)
	}
	b := p.free[best]
	p.free = append(p.free[:best], p.free[best+1:]...)
	return b
}

// recycle keeps buf for a later decode (the largest ahead+1 buffers).
func (p *Prefetcher) recycle(buf []byte) {
	if cap(buf) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) <= p.ahead {
		p.free = append(p.free, buf[:0])
		return
	}
	small := 0
	for i, b := range p.free {
		if cap(b) < cap(p.free[small]) {
			small = i
		}
	}
	if cap(p.free[small]) < cap(buf) {
		p.free[small] = buf[:0]
	}
}

// take returns the prefetched bytes of name, or ok false when name is not
// being prefetched.
func (p *Prefetcher) take(ctx context.Context, name string) (raw []byte, ok bool, err error) {
	raw, _, ok, err = p.takeBuf(ctx, name)
	return raw, ok, err
}

// readT reads name's float32 transpose from the source (its own
// ReadFloat32TContext / ReadFloat32T when it has one).
func (p *Prefetcher) readT(ctx context.Context, name string, dst []float32) ([]float32, error) {
	if tc, ok := p.src.(interface {
		ReadFloat32TContext(context.Context, string, []float32) ([]float32, error)
	}); ok {
		return tc.ReadFloat32TContext(ctx, name, dst)
	}
	return tensor.ReadFloat32T(p.src, name, dst)
}

// ReadFloat32T returns the named 2-D tensor as its float32 transpose
// (tensor.TransposedReader): the prefetched one when it was named by
// PrefetchOptions.Transposed, else read (and transposed) now.
func (p *Prefetcher) ReadFloat32T(name string, dst []float32) ([]float32, error) {
	f, err := p.claim(p.ctx, name, true)
	if f == nil && err == nil {
		return p.readT(p.ctx, name, dst)
	}
	if err != nil {
		return nil, err
	}
	return f.t, f.err
}

// takeBuf is take that also returns the buffer the decode was given.
func (p *Prefetcher) takeBuf(ctx context.Context, name string) (raw, buf []byte, ok bool, err error) {
	f, err := p.claim(ctx, name, false)
	if f == nil && err == nil {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, true, err
	}
	return f.raw, f.buf, true, f.err
}

// claim takes name's pending decode (the bytes become the caller's) and
// waits for it. It returns nil, nil when name is not being prefetched in
// the form asked for (transposed or as stored): a prefetch of the other
// form is dropped and the caller reads directly.
func (p *Prefetcher) claim(ctx context.Context, name string, transposed bool) (*future, error) {
	p.mu.Lock()
	f, ok := p.pending[name]
	delete(p.pending, name)
	p.fill()
	p.mu.Unlock()
	if !ok || f.isT != transposed {
		return nil, nil
	}
	select {
	case <-f.done:
		return f, nil
	case <-p.ctx.Done():
		return nil, p.ctx.Err()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Tensors lists the source's tensors.
func (p *Prefetcher) Tensors() []tensor.Info { return p.infos }

// Assets returns the source's assets.
func (p *Prefetcher) Assets() []tensor.Asset { return p.src.Assets() }

// ReadRaw returns the stored bytes of the named tensor: the prefetched ones
// (copied into dst when it is large enough) or a direct read.
func (p *Prefetcher) ReadRaw(name string, dst []byte) ([]byte, error) {
	return p.ReadTensor(context.Background(), name, dst)
}

// contextReader is a source whose reads take a context (NWCFile).
type contextReader interface {
	ReadTensor(ctx context.Context, name string, dst []byte) ([]byte, error)
}

// ReadTensor is ReadRaw that stops waiting when ctx is cancelled (a direct
// read of a source with its own ReadTensor passes ctx on to it).
func (p *Prefetcher) ReadTensor(ctx context.Context, name string, dst []byte) ([]byte, error) {
	raw, ok, err := p.take(ctx, name)
	if !ok {
		if cr, ok := p.src.(contextReader); ok {
			return cr.ReadTensor(ctx, name, dst)
		}
		return p.src.ReadRaw(name, dst)
	}
	if err != nil {
		return nil, err
	}
	if cap(dst) >= len(raw) {
		return append(dst[:0], raw...), nil
	}
	return raw, nil
}

// ReadFloat32 returns the named tensor as float32.
func (p *Prefetcher) ReadFloat32(name string, dst []float32) ([]float32, error) {
	raw, buf, ok, err := p.takeBuf(context.Background(), name)
	if !ok {
		return p.src.ReadFloat32(name, dst)
	}
	if err != nil {
		return nil, err
	}
	ti, _ := tensor.Find(p.infos, name)
	out, err := tensor.ToFloat32(ti.DType, raw, ti.NumElements(), dst)
	if err != nil {
		return nil, fmt.Errorf("prefetch: tensor %q: %w", name, err)
	}
	if cap(raw) > 0 && cap(buf) > 0 && &raw[:1][0] == &buf[:1][0] {
		p.recycle(raw) // converted into out, and ours: the next decode may use it
	}
	return out, nil
}

// Close stops the background decoding, waits for it, drops what was not
// taken and closes the source if owned.
func (p *Prefetcher) Close() error {
	p.mu.Lock() // fill runs under mu: no decode starts after this cancel
	p.cancel()
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	p.pending = map[string]*future{}
	p.free = nil
	p.mu.Unlock()
	if p.own {
		return p.src.Close()
	}
	return nil
}
