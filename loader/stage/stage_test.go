package stage

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestTimesAccumulateConcurrently(t *testing.T) {
	var tm Times
	ctx := With(context.Background(), &tm)
	if From(ctx) != &tm {
		t.Fatal("From does not return the Times put in by With")
	}
	if From(context.Background()) != nil {
		t.Fatal("From of a bare context is not nil")
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				From(ctx).Add(Network, time.Microsecond, 16)
			}
		}()
	}
	wg.Wait()
	if got := tm.Duration(Network); got != 800*time.Microsecond {
		t.Fatalf("network time %v, want 800µs", got)
	}
	if got := tm.Items(Network); got != 800*16 {
		t.Fatalf("network items %d, want %d", got, 800*16)
	}
	if tm.Total() != tm.Duration(Network) {
		t.Fatalf("total %v != network %v", tm.Total(), tm.Duration(Network))
	}
}

func TestNilTimesIsFree(t *testing.T) {
	var tm *Times
	tm.Add(Read, time.Second, 1)
	if !tm.Start().IsZero() || !tm.Since(Read, time.Now(), 1).IsZero() {
		t.Fatal("nil Times read the clock")
	}
	if tm.Duration(Read) != 0 || tm.Items(Read) != 0 || tm.Total() != 0 {
		t.Fatal("nil Times reports time")
	}
	if Stage(99).String() != "unknown" || Entropy.String() != "entropy" {
		t.Fatal("stage names")
	}
}
