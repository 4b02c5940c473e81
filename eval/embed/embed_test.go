package embed

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	text := " = Heading = \n" +
		" One two three four five . Too short . Six seven eight nine ten eleven ? One two three four five . \n" +
		"\n" +
		" = = Sub = = \n" +
		" A line without a final stop but long enough\n"
	got := Split(text)
	want := []string{"One two three four five .", "Six seven eight nine ten eleven ?", "A line without a final stop but long enough"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("Split: %q, want %q", got, want)
	}
	long := strings.Repeat("w ", MaxWords+1) + "."
	if s := Split(long); len(s) != 0 {
		t.Errorf("a %d-word sentence kept", MaxWords+2)
	}
}

func TestSentences(t *testing.T) {
	a, err := Sentences(DefaultSentences)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Sentences(DefaultSentences)
	seen := map[string]bool{}
	for i, s := range a {
		if s != b[i] {
			t.Fatal("not deterministic")
		}
		if seen[s] {
			t.Fatalf("duplicate %q", s)
		}
		seen[s] = true
		if n := len(strings.Fields(s)); n < MinWords || n > MaxWords {
			t.Fatalf("%q has %d words", s, n)
		}
	}
	if a[0] != "Robert Boulter is an English film , television and theatre actor ." {
		t.Errorf("first sentence %q", a[0])
	}
	if _, err := Sentences(1 << 20); !errors.Is(err, ErrTooFew) {
		t.Errorf("too many sentences: %v", err)
	}
}

func randomEmb(r *rand.Rand, n, d int) [][]float32 {
	e := make([][]float32, n)
	for i := range e {
		e[i] = make([]float32, d)
		for j := range e[i] {
			e[i][j] = float32(r.NormFloat64())
		}
	}
	return e
}

func TestCompare(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	ref := randomEmb(r, 200, 32)
	same, err := Compare(ctx, ref, ref, 10)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(same.MeanCosine-1) > 1e-12 || math.Abs(same.MinCosine-1) > 1e-12 || same.TopKAgreement != 1 {
		t.Errorf("identical embeddings: %+v", same)
	}
	// Scaling does not matter (cosine); noise lowers both figures, more
	// noise lowers them more.
	var prev Result = same
	for _, sigma := range []float64{0.1, 0.5, 2} {
		got := make([][]float32, len(ref))
		for i := range ref {
			got[i] = make([]float32, len(ref[i]))
			for j, v := range ref[i] {
				got[i][j] = 3*v + float32(sigma*r.NormFloat64())
			}
		}
		res, err := Compare(ctx, ref, got, 10)
		if err != nil {
			t.Fatal(err)
		}
		if !(res.MeanCosine < prev.MeanCosine && res.TopKAgreement < prev.TopKAgreement && res.MinCosine <= res.P1Cosine && res.P1Cosine <= res.MeanCosine) {
			t.Errorf("sigma %g: %+v after %+v", sigma, res, prev)
		}
		prev = res
	}
	if _, err := Compare(ctx, ref, ref[:10], 5); err == nil {
		t.Error("length mismatch accepted")
	}
	if _, err := Compare(ctx, ref, ref, 200); err == nil {
		t.Error("k = n accepted")
	}
}

// topK skips the query and breaks ties by index.
func TestTopK(t *testing.T) {
	got := topK([]float64{9, 1, 5, 5, 0}, 0, 3)
	if len(got) != 3 || got[0] != 2 || got[1] != 3 || got[2] != 1 {
		t.Errorf("topK %v", got)
	}
}
