"""A small reference rANS coder (Python ints) for checking real code sizes against the
entropy model's estimate. 32-bit state, 16-bit renormalization words, static tables
(nwc-cdf-v1: precision bits, L in-range symbols + escape).

Same coder as ortcodec/entropy (docs/ENTROPY.md): identical state/renormalization,
so for symbols without escapes the stream length is the Go stream's (4-byte state +
16-bit words) for one stream. Escapes are not bypass-coded here: their cost is added
exactly as the Go escape scheme spends it (6 + max(0, bitlen(e) - 1) bits, e the
folded distance outside the table range). Sizes are flagged "python-rans" in card.json.

Table selection: with 16 tables, symbol (n, c) uses table c; with levels*16 tables
(entropy.json "levels": 4), it uses table q[n]*16 + c.
"""
import numpy as np

RANS_L = 1 << 16          # lower bound of the state (state in [2^16, 2^32))


def table_ids(n, C, ntables, q=None):
    c = np.arange(C, dtype=np.int64)[None, :]
    if ntables == C:
        return np.broadcast_to(c, (n, C))
    assert q is not None and ntables % C == 0, "per-level tables need q"
    return np.asarray(q, dtype=np.int64)[:, None] * C + c


def symbol_indices(s, tables, q=None):
    """s: int array [N, C] of symbols round(y - median). Returns table ids [N, C], table
    indices [N, C] (escape index L where out of range) and the escape bypass bits [N, C]
    (0 where in range; ortcodec/entropy's escape scheme)."""
    n, C = s.shape
    tid = table_ids(n, C, len(tables), q)
    off = np.array([t["offset"] for t in tables], dtype=np.int64)[tid]
    L = np.array([len(t["cdf"]) - 2 for t in tables], dtype=np.int64)[tid]
    i = s.astype(np.int64) - off
    esc = (i < 0) | (i >= L)
    e = np.where(i < 0, 2 * (-1 - i), 2 * (i - L) + 1)
    bl = np.zeros(e.shape, dtype=np.int64)
    for k in range(1, 34):
        bl += (e >= (1 << (k - 1))).astype(np.int64) * (e >= 1)
    byp = np.where(esc, 6 + np.maximum(0, bl - 1), 0)
    i = np.where(esc, L, i)
    return tid, i, byp


def ideal_bits(tid, idx, byp, tables, precision=16):
    """Sum of -log2(freq / 2^precision) over all symbols + the escapes' bypass bits."""
    total = 0.0
    for t in np.unique(tid):
        m = tid == t
        cdf = np.asarray(tables[t]["cdf"], dtype=np.int64)
        f = (cdf[1:] - cdf[:-1])[idx[m]]
        total += float(np.sum(precision - np.log2(f)))
    return total + float(np.sum(byp))


def encode(tid, idx, tables, precision=16):
    """rANS-encode table indices idx [N, C] with tables[tid]; returns the list of 16-bit
    words (the stream; the final 32-bit state is flushed as 2 words)."""
    cdfs = [list(t["cdf"]) for t in tables]
    ft = np.asarray(tid).reshape(-1).tolist()
    flat = np.asarray(idx).reshape(-1).tolist()
    x = RANS_L
    out = []
    for k in range(len(flat) - 1, -1, -1):  # rANS encodes in reverse
        cdf = cdfs[ft[k]]
        i = flat[k]
        start = cdf[i]
        freq = cdf[i + 1] - start
        x_max = ((RANS_L >> precision) << 16) * freq
        while x >= x_max:
            out.append(x & 0xFFFF)
            x >>= 16
        x = ((x // freq) << precision) + (x % freq) + start
    out.append(x & 0xFFFF)
    out.append(x >> 16)
    out.reverse()
    return out


def decode(words, tid, tables, precision=16):
    cdfs = [np.asarray(t["cdf"], dtype=np.int64) for t in tables]
    mask = (1 << precision) - 1
    ft = np.asarray(tid).reshape(-1).tolist()
    x = (words[0] << 16) | words[1]
    pos = 2
    res = np.empty(len(ft), dtype=np.int64)
    for k in range(len(ft)):
        cdf = cdfs[ft[k]]
        v = x & mask
        i = int(np.searchsorted(cdf, v, side="right") - 1)
        start = int(cdf[i])
        freq = int(cdf[i + 1]) - start
        x = freq * (x >> precision) + v - start
        while x < RANS_L:
            x = (x << 16) | words[pos]
            pos += 1
        res[k] = i
    return res.reshape(np.asarray(tid).shape)
