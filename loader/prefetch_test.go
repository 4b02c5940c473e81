package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader/tensor"
)

// countingSource counts reads in flight and fails on one tensor.
type countingSource struct {
	*tensortest.MemSource
	inFlight, maxInFlight, reads atomic.Int32
	fail                         string
	gate                         chan struct{} // when set, reads wait on it
}

func (c *countingSource) ReadRaw(name string, dst []byte) ([]byte, error) {
	// Counted before inFlight, so a reader that sees inFlight >= k also
	// sees reads >= k.
	c.reads.Add(1)
	n := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for {
		m := c.maxInFlight.Load()
		if n <= m || c.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if c.gate != nil {
		<-c.gate
	}
	if name == c.fail {
		return nil, fmt.Errorf("source: tensor %q: %w", name, errors.New("damaged"))
	}
	return c.MemSource.ReadRaw(name, dst)
}

func prefetchSource(n int) *countingSource {
	m := &tensortest.MemSource{Data: map[string][]float32{}}
	for i := 0; i < n; i++ {
		v := make([]float32, 100+i)
		for j := range v {
			v[j] = float32(i*1000 + j)
		}
		m.Add(fmt.Sprintf("t%02d", i), v, int64(len(v)))
	}
	return &countingSource{MemSource: m}
}

func TestPrefetchSameBytesAnyOrder(t *testing.T) {
	for _, ahead := range []int{1, 2, 5, 50} {
		src := prefetchSource(20)
		names := []string{}
		for _, ti := range src.Tensors() {
			names = append(names, ti.Name)
		}
		// Read in a different order than the prefetch order, some twice.
		reads := append(slices.Clone(names[5:]), names[:5]...)
		reads = append(reads, "t03", "t17")
		p := Prefetch(context.Background(), src, false, PrefetchOptions{Ahead: ahead})
		for i, name := range reads {
			var got []byte
			var err error
			if i%2 == 0 {
				got, err = p.ReadRaw(name, nil)
			} else {
				f, e := p.ReadFloat32(name, nil)
				got, err = tensor.F32Bytes(f, nil), e
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := src.MemSource.ReadRaw(name, nil)
			if !bytes.Equal(got, want) {
				t.Fatalf("ahead %d: %s differs", ahead, name)
			}
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if m := src.maxInFlight.Load(); m > int32(ahead)+1 {
			t.Fatalf("ahead %d: %d reads in flight", ahead, m)
		}
	}
}

func TestPrefetchBoundedAndErrors(t *testing.T) {
	src := prefetchSource(10)
	src.gate = make(chan struct{})
	src.fail = "t04"
	p := Prefetch(context.Background(), src, false, PrefetchOptions{Ahead: 3})
	// Nothing taken: exactly 3 decodes started, blocked on the gate.
	for src.inFlight.Load() < 3 {
		runtime.Gosched()
	}
	if got := src.reads.Load(); got != 3 {
		t.Fatalf("%d reads started with ahead 3", got)
	}
	close(src.gate)
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("t%02d", i)
		_, err := p.ReadFloat32(name, nil)
		if (err != nil) != (name == "t04") || (err != nil && !bytes.Contains([]byte(err.Error()), []byte(`"t04"`))) {
			t.Fatalf("%s: err %v", name, err)
		}
	}
	p.Close()
	// Close with decodes pending returns and leaves no goroutine running.
	src2 := prefetchSource(10)
	p2 := Prefetch(context.Background(), src2, true, PrefetchOptions{Ahead: 4})
	if err := p2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p2.ReadRaw("t00", nil); err != nil { // direct read still works on a MemSource
		t.Fatal(err)
	}
}
