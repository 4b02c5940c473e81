package entropy

import (
	"container/heap"
	"math"
)

// NormalizeFreqs turns symbol counts into the integer frequencies of a
// static model: every one >= 1, summing to M, greedily minimizing the coded
// size sum c_i log2(M/f_i) of these very counts. Deterministic (ties go to
// the lower index). len(counts) must be <= M.
func NormalizeFreqs(counts []int64, M int64) []int64 {
	var total int64
	for _, c := range counts {
		total += c
	}
	f := make([]int64, len(counts))
	var sum int64
	for i, c := range counts {
		if total > 0 {
			f[i] = int64(float64(c) * float64(M) / float64(total))
		}
		f[i] = max(f[i], 1)
		sum += f[i]
	}
	if sum < M {
		// Add to the largest gain c log2((f+1)/f).
		h := &gainHeap{}
		for i, c := range counts {
			if c > 0 {
				h.items = append(h.items, gainItem{i, float64(c) * math.Log2(float64(f[i]+1)/float64(f[i]))})
			}
		}
		if len(h.items) == 0 {
			f[0] += M - sum
			return f
		}
		heap.Init(h)
		for ; sum < M; sum++ {
			it := &h.items[0]
			f[it.i]++
			it.gain = float64(counts[it.i]) * math.Log2(float64(f[it.i]+1)/float64(f[it.i]))
			heap.Fix(h, 0)
		}
	} else if sum > M {
		// Take from the smallest loss c log2(f/(f-1)), f > 1.
		h := &gainHeap{}
		for i, c := range counts {
			if f[i] > 1 {
				h.items = append(h.items, gainItem{i, -float64(c) * math.Log2(float64(f[i])/float64(f[i]-1))})
			}
		}
		heap.Init(h)
		for ; sum > M; sum-- {
			it := &h.items[0]
			f[it.i]--
			if f[it.i] == 1 {
				heap.Pop(h)
				continue
			}
			it.gain = -float64(counts[it.i]) * math.Log2(float64(f[it.i])/float64(f[it.i]-1))
			heap.Fix(h, 0)
		}
	}
	return f
}

type gainItem struct {
	i    int
	gain float64
}

// gainHeap is a max-heap on gain (ties: lower index first, for
// determinism).
type gainHeap struct{ items []gainItem }

func (h *gainHeap) Len() int { return len(h.items) }
func (h *gainHeap) Less(a, b int) bool {
	x, y := h.items[a], h.items[b]
	if x.gain != y.gain {
		return x.gain > y.gain
	}
	return x.i < y.i
}
func (h *gainHeap) Swap(a, b int) { h.items[a], h.items[b] = h.items[b], h.items[a] }
func (h *gainHeap) Push(x any)    { h.items = append(h.items, x.(gainItem)) }
func (h *gainHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
