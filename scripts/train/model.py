"""NWC codec: encoder/decoder MLPs with quality embeddings + factorized entropy model.

Architecture (nwc-method.md step 4, width W and depth D as parameters):
  encoder  Linear(16->W), D x [x = x + ReLU(LayerNorm(Linear(W->W)(x))); x = x * E[q]],
           Linear(W->16)
  decoder  the mirror: Linear(16->W), D x [same block, own weights; x = x * E[q]],
           Linear(W->16)
  E = Embedding(4, W), shared by encoder and decoder, initialised to ones.
  Deviation: both MLPs have a linear 16->16 skip (identity init; the MLP's last layer
  zero init): without it the 1500-step CPU runs had an MSE floor ~2.6e-3 at every rate.
  Deviation: a learned latent gain G[q] (4x16, shared) scales the encoder output
  (y = enc(x) * exp(G[q])) and the decoder input (dec(y_hat * exp(-G[q]))); it is
  initialised at the high-rate optimum for lambda and c[q] (initial_log_gain) so that a
  few thousand CPU steps suffice. Inside the ONNX graphs; no change for the Go side.
Reference config: W=512, D=4. CPU configs: W=64..128, D=1..2.

The global input standardization of the dataset (mean, std) is stored as buffers
and baked into the exported graphs: encoder.onnx takes row-normalized chunks
(W / row_std) and decoder.onnx returns them, so the Go side only does per-row
scaling.

FactorizedEntropy is a self-contained re-implementation of Balle et al. 2018's
non-parametric factorized density (the model of CompressAI's EntropyBottleneck:
filters (3,3,3), init_scale 10, tail mass 1e-9, quantile "aux" loss), so the
training stack has no CompressAI dependency.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LIKELIHOOD_BOUND = 1e-9
RATE_C = (3.4, 1.2, 0.1, 0.05)  # c[q] for quality levels 0..3 (nwc-method.md)


class ResBlock(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(w, w)
        self.ln = nn.LayerNorm(w)

    def forward(self, x):
        return x + F.relu(self.ln(self.lin(x)))


class MLPCoder(nn.Module):
    def __init__(self, d, width, depth, skip=True):
        super().__init__()
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList([ResBlock(width) for _ in range(depth)])
        self.out = nn.Linear(width, d)
        # deviation: a linear 16->16 skip around the MLP (identity init, MLP output zero
        # init), so training starts at a scalar quantizer and the MLP learns the rest
        self.skip = nn.Linear(d, d, bias=False) if skip else None
        if skip:
            nn.init.eye_(self.skip.weight)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x, e):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h) * e
        h = self.out(h)
        return h + self.skip(x) if self.skip is not None else h


class FactorizedEntropy(nn.Module):
    """Per-channel non-parametric density (Balle 2018), CompressAI-compatible math."""

    def __init__(self, channels, filters=(3, 3, 3), init_scale=10.0, tail_mass=1e-9):
        super().__init__()
        self.channels = channels
        self.filters = tuple(filters)
        self.tail_mass = float(tail_mass)
        f = (1,) + self.filters + (1,)
        scale = init_scale ** (1 / (len(self.filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(self.filters) + 1):
            init = math.log(math.expm1(1 / scale / f[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, f[i + 1], f[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, f[i + 1], 1) - 0.5))
            if i < len(self.filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, f[i + 1], 1)))
        self.quantiles = nn.Parameter(torch.tensor([-init_scale, 0, init_scale]).repeat(channels, 1, 1))
        t = math.log(2 / self.tail_mass - 1)
        self.register_buffer("target", torch.tensor([-t, 0, t]))

    def logits_cumulative(self, x, stop_gradient=False):
        # x: [C, 1, N]
        for i in range(len(self.filters) + 1):
            m = self.matrices[i]
            b = self.biases[i]
            if stop_gradient:
                m, b = m.detach(), b.detach()
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.factors):
                fa = self.factors[i]
                if stop_gradient:
                    fa = fa.detach()
                x = x + torch.tanh(fa) * torch.tanh(x)
        return x

    @torch.no_grad()
    def fit_quantiles(self, lo=-65536.0, hi=65536.0, iters=64):
        """Set the quantiles exactly (bisection on the monotone cumulative logits) to the
        points where the learned CDF equals tail/2, 1/2 and 1 - tail/2: what the aux loss
        converges to, without needing 100k+ aux steps in a short CPU run."""
        C = self.channels
        a = torch.full((C, 1, 3), lo)
        b = torch.full((C, 1, 3), hi)
        t = self.target.view(1, 1, 3).expand(C, 1, 3)
        for _ in range(iters):
            m = (a + b) / 2
            above = self.logits_cumulative(m) > t
            b = torch.where(above, m, b)
            a = torch.where(above, a, m)
        self.quantiles.data.copy_((a + b) / 2)

    def medians(self):
        return self.quantiles[:, 0, 1].detach()

    def aux_loss(self):
        logits = self.logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def _likelihood(self, v):
        """v: [C, 1, N] -> p [C, 1, N]."""
        lower = self.logits_cumulative(v - 0.5)
        upper = self.logits_cumulative(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.clamp_min(LIKELIHOOD_BOUND)

    def likelihood(self, y, q=None):
        """y: [N, d] (noisy or quantized), q: [N] quality levels (needed when the model has
        one density per (level, channel)). Returns p [N, d]."""
        if self.channels == y.shape[1]:
            return self._likelihood(y.t().unsqueeze(1)).squeeze(1).t()
        d = y.shape[1]
        levels = self.channels // d
        # group by level; pad the groups to one length so one batched call does all
        p = torch.empty_like(y)
        groups = [torch.nonzero(q == lv, as_tuple=True)[0] for lv in range(levels)]
        n = max(int(g.numel()) for g in groups)
        if n == 0:
            return p
        v = y.new_zeros(levels, d, n)
        for lv, g in enumerate(groups):
            v[lv, :, : g.numel()] = y[g].t()
        pv = self._likelihood(v.reshape(levels * d, 1, n)).reshape(levels, d, n)
        for lv, g in enumerate(groups):
            p[g] = pv[lv, :, : g.numel()].t()
        return p

    def quantize(self, y, q=None):
        """Symbols s = round(y - median) (half to even), y_hat = s + median (float32).
        Per-level medians when the model has one density per (level, channel)."""
        med = self.medians().to(y.dtype)
        if self.channels != y.shape[1]:
            med = med.view(-1, y.shape[1])[q]
        s = torch.round(y - med)
        return s, s + med

    @torch.no_grad()
    def cdf_tables(self, precision=16):
        """Integer CDF tables (nwc-cdf-v1), computed once from the learned density like
        CompressAI's EntropyBottleneck.update(): per channel the symbol range
        [offset, offset+L-1] covers the learned quantiles, pmf from the density,
        escape symbol gets the tail mass; every frequency >= 1."""
        med = self.quantiles[:, 0, 1]
        minima = torch.ceil(med - self.quantiles[:, 0, 0]).clamp_min(0).long()
        maxima = torch.ceil(self.quantiles[:, 0, 2] - med).clamp_min(0).long()
        tables = []
        for c in range(self.channels):
            lo, hi = int(minima[c]), int(maxima[c])
            L = lo + hi + 1
            samples = torch.arange(-lo, hi + 1, dtype=torch.float32) + med[c]
            x = torch.full((self.channels, 1, L), 0.0)
            x[c, 0] = samples
            lower = self.logits_cumulative(x - 0.5)[c, 0]
            upper = self.logits_cumulative(x + 0.5)[c, 0]
            sign = -torch.sign(lower + upper)
            pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).double()
            tail = float(torch.sigmoid(lower[0]) + torch.sigmoid(-upper[-1]))
            cdf = pmf_to_quantized_cdf(np.concatenate([pmf.numpy(), [tail]]), precision)
            tables.append({"median": np.float32(med[c].item()), "offset": -lo, "cdf": cdf})
        return tables


def pmf_to_quantized_cdf(pmf, precision=16):
    """CompressAI's pmf_to_quantized_cdf (C++ in compressai/cpp_exts), in numpy:
    scale to 2^precision, every frequency >= 1, fix the total by stealing from the
    smallest-cost symbols. Returns a python list of L+1 ints (cdf[0]=0, cdf[-1]=2^p)."""
    total = 1 << precision
    pmf = np.asarray(pmf, dtype=np.float64)
    pmf = pmf / pmf.sum()
    freq = np.maximum(np.round(pmf * total).astype(np.int64), 1)
    diff = total - int(freq.sum())
    # adjust: add to / take from the largest frequencies (smallest relative cost)
    order = np.argsort(-freq, kind="stable")
    i = 0
    while diff != 0:
        j = order[i % len(order)]
        if diff > 0:
            freq[j] += 1
            diff -= 1
        elif freq[j] > 1:
            freq[j] -= 1
            diff += 1
        i += 1
    cdf = np.concatenate([[0], np.cumsum(freq)])
    assert cdf[-1] == total and np.all(np.diff(cdf) >= 1)
    return [int(v) for v in cdf]


def initial_log_gain(lmbda, levels=4, d=16):
    """Latent gain per quality level at the high-rate optimum of lambda*D + c[q]*R for a
    unit-step uniform quantizer: D = 1/(12 g^2), dD/dR = -2 ln2 D  =>  g^2 = 2 ln2 lambda / (12 c[q]).
    Only an initialization (the gains are learned); it lets a short CPU run start near the
    right rate instead of spending thousands of Adam steps growing the latent scale."""
    g = [0.5 * math.log(max(1e-6, 2 * math.log(2) * lmbda / (12 * c))) for c in RATE_C[:levels]]
    return torch.tensor(g).view(levels, 1).repeat(1, d)


class NWCCodec(nn.Module):
    def __init__(self, width=128, depth=2, d=16, levels=4, mean=0.0, std=1.0, lmbda=None):
        super().__init__()
        self.width, self.depth, self.d, self.levels = width, depth, d, levels
        self.q_embed = nn.Embedding(levels, width)
        nn.init.ones_(self.q_embed.weight)
        self.encoder = MLPCoder(d, width, depth)
        self.decoder = MLPCoder(d, width, depth)
        # deviation: one density per (quality level, channel), 4 x 16 (see docs/TRAINING.md)
        self.entropy = FactorizedEntropy(levels * d)
        # learned per-(q, channel) latent gain: y = enc(x) * exp(g[q]); dec(y_hat * exp(-g[q]))
        self.log_gain = nn.Parameter(initial_log_gain(lmbda, levels, d) if lmbda else torch.zeros(levels, d))
        self.register_buffer("in_mean", torch.tensor(float(mean)))
        self.register_buffer("in_std", torch.tensor(float(std)))

    arch = "mlp"

    def config(self):
        return {"arch": "mlp", "width": self.width, "depth": self.depth, "d": self.d, "levels": self.levels}

    def encode(self, x, q):
        """x: standardized chunks [N,16]."""
        return self.encoder(x, self.q_embed(q)) * torch.exp(self.log_gain[q])

    def decode(self, y_hat, q):
        return self.decoder(y_hat * torch.exp(-self.log_gain[q]), self.q_embed(q))

    def forward(self, x, q, noise=True):
        y = self.encode(x, q)
        if noise:
            y_t = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            _, y_t = self.entropy.quantize(y, q)
        p = self.entropy.likelihood(y_t, q)
        x_hat = self.decode(y_t, q)
        return x_hat, p, y

    def main_parameters(self):
        return [p for n, p in self.named_parameters() if not n.endswith("quantiles")]

    def aux_parameters(self):
        return [p for n, p in self.named_parameters() if n.endswith("quantiles")]


class GainCodec(nn.Module):
    """Network-free floor codec (arch "gain"): no MLP, no skip, no embedding.
    encode(x, q) = x * exp(G[q]); decode(y_hat, q) = y_hat * exp(-G[q]), G learned per
    (level, channel) (4 x 16, init initial_log_gain), plus the same per-level factorized
    entropy model, loss and schedule as NWCCodec: an entropy-coded uniform scalar quantizer
    with a learned step per (level, channel). What the MLPs add beyond it is what the
    learned transform is worth."""

    arch = "gain"

    def __init__(self, width=0, depth=0, d=16, levels=4, mean=0.0, std=1.0, lmbda=None):
        super().__init__()
        self.width, self.depth, self.d, self.levels = 0, 0, d, levels
        self.entropy = FactorizedEntropy(levels * d)
        self.log_gain = nn.Parameter(initial_log_gain(lmbda, levels, d) if lmbda else torch.zeros(levels, d))
        self.register_buffer("in_mean", torch.tensor(float(mean)))
        self.register_buffer("in_std", torch.tensor(float(std)))

    def config(self):
        return {"arch": "gain", "width": 0, "depth": 0, "d": self.d, "levels": self.levels}

    def enc_gain(self):
        """ENC [levels, d] = float32 exp(G): the constant baked into encoder.onnx."""
        return torch.exp(self.log_gain)

    def dec_gain(self):
        """DEC [levels, d] = float32 exp(-G): the constant baked into decoder.onnx."""
        return torch.exp(-self.log_gain)

    def encode(self, x, q):
        return x * self.enc_gain()[q]

    def decode(self, y_hat, q):
        return y_hat * self.dec_gain()[q]

    forward = NWCCodec.forward
    main_parameters = NWCCodec.main_parameters
    aux_parameters = NWCCodec.aux_parameters


def make_codec(arch, width, depth, **kw):
    """arch "mlp" (NWCCodec, default) or "gain" (GainCodec)."""
    if arch == "gain":
        return GainCodec(0, 0, **kw)
    return NWCCodec(width, depth, **kw)


class GainExportEncoder(nn.Module):
    """encoder.onnx of a gain codec, op for op: y = ((x - MEAN) / STD) * Gather(ENC, q)."""

    def __init__(self, codec):
        super().__init__()
        self.register_buffer("enc", codec.enc_gain().detach().float().clone())
        self.register_buffer("mean", codec.in_mean.detach().float().clone())
        self.register_buffer("std", codec.in_std.detach().float().clone())

    def forward(self, x, q):
        return ((x - self.mean) / self.std) * self.enc[q]


class GainExportDecoder(nn.Module):
    """decoder.onnx of a gain codec, op for op: x_hat = ((y_hat * Gather(DEC, q)) * STD) + MEAN
    (the Go side decodes it natively in the same float32 order, bit for bit)."""

    def __init__(self, codec):
        super().__init__()
        self.register_buffer("dec", codec.dec_gain().detach().float().clone())
        self.register_buffer("mean", codec.in_mean.detach().float().clone())
        self.register_buffer("std", codec.in_std.detach().float().clone())

    def forward(self, y_hat, q):
        return ((y_hat * self.dec[q]) * self.std) + self.mean


class ExportEncoder(nn.Module):
    """ONNX wrapper: x = row-normalized chunks -> standardize -> encoder -> y."""

    def __init__(self, codec):
        super().__init__()
        self.c = codec

    def forward(self, x, q):
        return self.c.encode((x - self.c.in_mean) / self.c.in_std, q)


class ExportDecoder(nn.Module):
    """ONNX wrapper: y_hat -> decoder -> de-standardize -> row-normalized chunks."""

    def __init__(self, codec):
        super().__init__()
        self.c = codec

    def forward(self, y_hat, q):
        return self.c.decode(y_hat, q) * self.c.in_std + self.c.in_mean
