"""Several trained CGCNN members evaluated as one network (inference only).

Why: an ensemble's members share the graph, the Gaussian expansion and every index, and a
member's forward pass on a large cell is memory-bound edge work (gathers, softplus, sigmoid,
scatter over ~13 edges per atom × 2·hidden channels). Evaluating the K members side by side
— node features ``(atoms, K·hidden)``, one gather of K members' projections per edge, one
matmul for K members' edge terms, one elementwise pass per operation — does the same
arithmetic with K× fewer, larger operations. Batch norm is folded into the linear maps
(eval mode: running statistics), the embedding into one table per member.

The edges go through each layer in chunks of ``chunk_floats`` pre-activations (default 256k
floats, 1 MB: ~204 edges of 5 × 128 channels) so every edge temporary stays in the core's L2
cache. That, not the stacking, is what pays: stacked whole batches (10 MB edge tensors) were
no faster than the members one by one; chunked they are 1.7× faster on ~110-atom cells
(``benchmarks/surrogate.py speed_large``, same process, alternated).

The edge term of every layer, ``G(d)·W_edge`` (41 Gaussians of the distance times a
41 × 2·K·H map), depends on the distance only: it is tabulated once per ensemble on a grid of
``grid_step`` Å (value and slope per grid point) and each edge reads it by cubic Hermite
interpolation — four table rows instead of a 41-wide matmul row. The two atom terms and the
four rows are summed by one ``embedding_bag`` (six weighted rows per edge: one pass, no
temporaries). Error: the Gaussians (width 0.2 Å) are smooth, so the interpolation error is
~h⁴/384·max|f⁗| — at 0.02 Å about 1e-6 eV/atom on the predictions (tested ≤ 1e-4).
The published σ(gate)·softplus(core) is evaluated as σ(gate)·log1p(2^(core·log₂e)) with
log₂e folded into the core columns: ``exp2`` costs 0.3 ns per element on this CPU where
``exp`` costs 0.8 and ``F.softplus`` 1.4; a layer whose exponent overflows (core > 88, never
seen in a trained model) is recomputed with ``F.softplus``, so the function is unchanged.
~110-atom cells, 5 × 64 channels: 146 → 210 inferences per CPU s (same process).
``grid_step=None`` keeps the previous evaluator (Gaussian matmul, ``F.softplus``): the
reference the benchmark compares with.

The function is each member's ``eval()`` forward pass (same parameters; the summation order
and the interpolation differ at ~1e-6): ``tests/test_surrogates_graphs.py`` compares both and
the textbook concatenated formulation ``W·[v_i ‖ v_j ‖ e_ij]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F  # noqa: N812

from .graphs import GraphBatch
from .models import CGCNN, gated_message

#: Å between the points on which each layer's edge term ``G(d)·W_edge`` is tabulated.
#: Measured on ~110-atom cells (5 × 64 channels, max |Δ| against the Gaussian matmul):
#: 0.01 Å 5.5e-7 eV/atom, 0.02 Å 6.3e-7, 0.03 Å 9.5e-7, 0.05 Å 7.4e-6, at equal speed
#: (the rows actually read, ~2-6 Å, stay in cache at 0.02: ~2 × 200 rows × 2.5 KB per layer).
#: Linear interpolation (2 rows) needs ~0.0025 Å for the same error (8 MB tables): no faster.
EDGE_GRID_STEP = 0.02

LOG2E = 1.0 / math.log(2.0)


def _bn_affine(bn: torch.nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``bn(x) == x * scale + shift`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class StackedCGCNN:
    """K CGCNN members of one shape as one evaluator: ``forward(batch) → (K, crystals, outputs)``.

    Layouts (K members, H hidden): node features ``(N, K·H)`` with member k in columns
    ``k·H … k·H+H-1``; pre-activations per edge ``(E, 2·K·H)`` as [gates of all members |
    cores of all members], so the gate and core halves are two column blocks.
    """

    def __init__(self, members: Sequence[CGCNN], chunk_floats: int = 1 << 18,
                 grid_step: float | None = EDGE_GRID_STEP) -> None:
        """``chunk_floats``: 64k → 256k (1 MB, the L2 of this VM's cores): light members
        (5 × 48 channels, 8 neighbours) 318 → 367 and default members 121 → 123 inferences
        per CPU s on ~110-atom cells (same process, best of 3); 4M (no chunking) 196 / 75.
        ``grid_step``: Å between the tabulated edge terms (:data:`EDGE_GRID_STEP`); ``None``
        evaluates the Gaussian expansion and its matmul per edge (the previous evaluator)."""
        if not members or not all(isinstance(m, CGCNN) for m in members):
            raise TypeError("StackedCGCNN needs one or more CGCNN members")
        first = members[0]
        self.k = len(members)
        self.hidden = first.atoms.embed.weight.shape[1]
        if any(m.atoms.embed.weight.shape[1] != self.hidden or len(m.convs) != len(first.convs)
               or not torch.equal(m.rbf.centres, first.rbf.centres) for m in members):
            raise ValueError("members differ in hidden size, layers or distance expansion")
        kinds = {c.edge_activation for m in members for c in m.convs}
        if len(kinds) != 1:
            raise ValueError(f"members differ in edge activation: {sorted(kinds)}")
        self.edge_activation = kinds.pop()
        self.rbf = first.rbf
        self.chunk_floats = chunk_floats
        k, h = self.k, self.hidden
        with torch.no_grad():
            # embedding + projected descriptors, per element: (K, Z+1, H) → gathered once
            self.table = torch.stack([m.atoms.embed.weight + m.atoms.proj(m.atoms.desc)
                                      for m in members]).contiguous()
            self.layers = []
            for li in range(len(first.convs)):
                convs = [m.convs[li] for m in members]
                s1 = [_bn_affine(c.bn1) for c in convs]
                w_self = torch.stack([(c.lin_self.weight * s[:, None]).t()
                                      for c, (s, _) in zip(convs, s1, strict=True)])  # (K, H, 2H)
                b_self = torch.stack([c.lin_self.bias * s + t
                                      for c, (s, t) in zip(convs, s1, strict=True)])  # (K, 2H)
                w_nb = torch.stack([(c.lin_nb.weight * s[:, None]).t()
                                    for c, (s, _) in zip(convs, s1, strict=True)])
                w_edge = torch.stack([c.lin_edge.weight * s[:, None]
                                      for c, (s, _) in zip(convs, s1, strict=True)])  # (K, 2H, R)
                r = w_edge.shape[2]
                # columns [gate_0 … gate_{K-1} | core_0 … core_{K-1}]
                w_edge = w_edge.view(k, 2, h, r).permute(3, 1, 0, 2).reshape(r, 2 * k * h)
                s2 = [_bn_affine(c.bn2) for c in convs]
                # per-atom maps split into each member's gate and core blocks, bias in the
                # edge column layout
                b_self = b_self.view(k, 2, h).transpose(0, 1).reshape(2 * k * h)
                self.layers.append((self._split(w_self), b_self.contiguous(),
                                    self._split(w_nb), w_edge.contiguous(),
                                    torch.cat([s for s, _ in s2]), torch.cat([t for _, t in s2])))
            lin1 = [m.head[0] for m in members]
            lin2 = [m.head[2] for m in members]
            self.head1 = (torch.stack([m.weight.t() for m in lin1]).contiguous(),
                          torch.stack([m.bias for m in lin1])[:, None, :].contiguous())
            self.head2 = (torch.stack([m.weight.t() for m in lin2]).contiguous(),
                          torch.stack([m.bias for m in lin2])[:, None, :].contiguous())
        self.grid_step = grid_step
        self.fast_softplus = grid_step is not None and self.edge_activation == "softplus"
        self.tabulated: list[tuple] = []
        if grid_step is not None:
            self._tabulate(grid_step)

    def _tabulate(self, step: float) -> None:
        """Per layer: the atom maps (core columns × log₂e for the exp2 softplus) and the table
        ``[f(d_0), h·f'(d_0), f(d_1), h·f'(d_1), …]`` of ``f(d) = G(d)·W_edge`` on
        ``d_j = j·h``, computed in float64. The grid ends where every Gaussian is exactly 0
        (the expansion cuts ``exp(-arg)`` at arg 60), so clamping longer distances is exact."""
        if step <= 0:
            raise ValueError(f"grid_step must be positive, got {step}")
        kh = self.k * self.hidden
        centres = self.rbf.centres.double()
        reach = float(centres[-1]) + math.sqrt(60.0 / self.rbf.gamma)
        self.n_grid = int(math.ceil(reach / step)) + 2
        d = torch.arange(self.n_grid, dtype=torch.float64) * step
        diff = d[:, None] - centres[None, :]
        arg = self.rbf.gamma * diff * diff
        g = torch.where(arg < 60.0, torch.exp(-arg), torch.zeros_like(arg))
        dg = -2.0 * self.rbf.gamma * diff * g
        scale = torch.ones(2 * kh, dtype=torch.float64)
        if self.fast_softplus:
            scale[kh:] = LOG2E
        c = LOG2E if self.fast_softplus else 1.0
        for w_self, b_self, w_nb, w_edge, _, _ in self.layers:
            w = w_edge.double() * scale
            table = torch.stack([g @ w, step * (dg @ w)], dim=1).reshape(2 * self.n_grid, 2 * kh)
            self.tabulated.append(([(wg, wc * c) for wg, wc in w_self],
                                   (b_self.double() * scale).float(),
                                   [(wg, wc * c) for wg, wc in w_nb],
                                   table.float().contiguous()))

    def _split(self, w: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(K, H, 2H)`` maps → per member (gate block, core block), each ``(H, H)``."""
        h = self.hidden
        return [(wk[:, :h].contiguous(), wk[:, h:].contiguous()) for wk in w]

    def _node_terms(self, v: torch.Tensor, w: list[tuple[torch.Tensor, torch.Tensor]],
                    b: torch.Tensor | None) -> torch.Tensor:
        """Per-atom projections of all members, ``(N, 2·K·H)`` in the edge column layout:
        each member's block written in place by one ``addmm_`` (no batched matmul of a
        transposed view and no permuting copy: 2.1 → 1.6 ms for 2,000 atoms × 5 × 48)."""
        n, kh = v.shape[0], self.k * self.hidden
        out = b.expand(n, -1).clone() if b is not None else v.new_zeros((n, 2 * kh))
        return self._project(v, w, out)

    def _project(self, v: torch.Tensor, w: list[tuple[torch.Tensor, torch.Tensor]],
                 out: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """``out = beta·out +`` each member's gate and core projections of ``v`` (in place;
        ``beta=0`` ignores what ``out`` held, so it need not be zeroed first)."""
        h = self.hidden
        kh = self.k * h
        for m, (wg, wc) in enumerate(w):
            vm = v[:, m * h:(m + 1) * h]
            out[:, m * h:(m + 1) * h].addmm_(vm, wg, beta=beta)
            out[:, kh + m * h:kh + (m + 1) * h].addmm_(vm, wc, beta=beta)
        return out

    def _messages(self, a: torch.Tensor, b: torch.Tensor, e: torch.Tensor, w_edge: torch.Tensor,
                  src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor | None,
                  agg: torch.Tensor) -> None:
        """Gated messages of one chunk of edges, summed into ``agg`` per centre atom."""
        kh = agg.shape[1]
        z = a.index_select(0, src)
        z += b.index_select(0, dst)
        z.addmm_(e, w_edge)
        msg = gated_message(z[:, :kh], z[:, kh:], self.edge_activation, inplace=True)
        if weight is not None:
            msg.mul_(weight)
        agg.index_add_(0, src, msg)

    def _edge_rows(self, batch: GraphBatch, n: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Per edge, the six rows ``embedding_bag`` sums — ``a[src]``, ``b[dst]`` and the four
        Hermite rows of its distance — with their weights, for a buffer ``[a; b; table rows
        lo … hi-1]`` (only the rows this batch's distances reach are copied). Same for every
        layer, so computed once per batch."""
        x = (batch.dist.double() / self.grid_step).clamp_(0.0, float(self.n_grid - 1))
        j = x.floor().clamp_(max=self.n_grid - 2)
        t = (x - j).float()
        j = j.long()
        lo = 2 * int(j.min()) if j.numel() else 0
        hi = 2 * int(j.max()) + 4 if j.numel() else 4
        t2 = t * t
        t3 = t2 * t
        one = torch.ones_like(t)
        w = torch.stack([one, one, 2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, 3 * t2 - 2 * t3,
                         t3 - t2], dim=1)
        row = 2 * n - lo + 2 * j
        idx = torch.stack([batch.src, n + batch.dst, row, row + 1, row + 2, row + 3], dim=1)
        return idx, w, lo, hi

    def _table_messages(self, buf: torch.Tensor, idx: torch.Tensor, w: torch.Tensor,
                        src: torch.Tensor, weight: torch.Tensor | None, agg: torch.Tensor,
                        exact: bool) -> None:
        """Gated messages of one chunk of edges from the six-row sums, summed into ``agg``.
        ``exact``: ``F.softplus`` on the unscaled core (the fallback after an overflow)."""
        kh = agg.shape[1]
        z = F.embedding_bag(idx, buf, per_sample_weights=w, mode="sum")
        gate, core = z[:, :kh], z[:, kh:]
        if not self.fast_softplus:
            msg = gated_message(gate, core, self.edge_activation, inplace=True)
        elif exact:
            msg = F.softplus(core.mul_(math.log(2.0))).mul_(gate.sigmoid_())
        else:  # softplus(c) = log1p(2^(c·log₂e)), c·log₂e folded into the weights
            msg = torch.log1p(core.exp2_()).mul_(gate.sigmoid_())
        if weight is not None:
            msg.mul_(weight)
        agg.index_add_(0, src, msg)

    @torch.no_grad()
    def forward(self, batch: GraphBatch, rbf: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs of every member, ``(K, crystals, outputs)`` (standardised units). ``rbf``
        (the Gaussian expansion of ``batch.dist``) is only used with ``grid_step=None``."""
        k, h = self.k, self.hidden
        kh = k * h
        n = batch.z.shape[0]
        v = self.table.index_select(1, batch.z).transpose(0, 1).reshape(n, kh)
        # merged periodic images only occur in small cells; large cells skip the multiply
        weight = None if bool((batch.weight == 1).all()) else batch.weight[:, None]
        step = max(1, self.chunk_floats // (2 * kh))
        if self.grid_step is None:
            v = self._gaussian_layers(batch, v, rbf, weight, step)
        else:
            v = self._table_layers(batch, v, weight, step)
        pooled = v.new_zeros((batch.num_graphs, kh)).index_add_(0, batch.graph_index, v)
        count = torch.bincount(batch.graph_index, minlength=batch.num_graphs).clamp(min=1)
        pooled = (pooled / count[:, None].to(v.dtype)).view(-1, k, h).transpose(0, 1)  # (K, B, H)
        density = torch.log(batch.volume_per_atom)[None, :, None].expand(k, -1, 1)
        x = torch.cat([pooled, density], dim=2)
        x = F.softplus(torch.baddbmm(self.head1[1], x, self.head1[0]))
        return torch.baddbmm(self.head2[1], x, self.head2[0])

    def _table_layers(self, batch: GraphBatch, v: torch.Tensor, weight: torch.Tensor | None,
                      step: int) -> torch.Tensor:
        """The convolutions with tabulated edge terms (see the module docstring)."""
        n, kh = v.shape[0], v.shape[1]
        src, n_edges = batch.src, batch.src.shape[0]
        idx, w, lo, hi = self._edge_rows(batch, n)
        buf = v.new_empty((2 * n + hi - lo, 2 * kh))
        agg = v.new_empty((n, kh))  # allocated once: fresh pages cost faults on every layer
        for (w_self, b_self, w_nb, table), (*_, s2, t2) in zip(self.tabulated, self.layers,
                                                                strict=True):
            self._project(v, w_self, buf[:n].copy_(b_self.expand(n, -1)))
            self._project(v, w_nb, buf[n:2 * n], beta=0.0)
            buf[2 * n:].copy_(table[lo:hi])
            for exact in (False, True):
                agg.zero_()
                for c0 in range(0, n_edges, step):
                    c1 = min(c0 + step, n_edges)
                    self._table_messages(buf, idx[c0:c1], w[c0:c1], src[c0:c1],
                                         None if weight is None else weight[c0:c1], agg, exact)
                # 2^x overflows beyond x = 128 (core > 88): inf/nan in agg, redo with softplus.
                # The sum is non-finite if any element is (or if it overflows: a needless redo
                # at worst) and costs one pass, where isfinite(agg).all() costs five.
                if not self.fast_softplus or math.isfinite(float(agg.sum())):
                    break
            v = F.softplus(agg.mul_(s2).add_(t2).add_(v))
        return v

    def _gaussian_layers(self, batch: GraphBatch, v: torch.Tensor, rbf: torch.Tensor | None,
                         weight: torch.Tensor | None, step: int) -> torch.Tensor:
        """The convolutions with the Gaussian expansion and its matmul per edge."""
        n, kh = v.shape[0], v.shape[1]
        e = self.rbf(batch.dist) if rbf is None else rbf
        src, dst = batch.src, batch.dst
        n_edges = src.shape[0]
        for w_self, b_self, w_nb, w_edge, s2, t2 in self.layers:
            a = self._node_terms(v, w_self, b_self)
            b = self._node_terms(v, w_nb, None)
            agg = v.new_zeros((n, kh))
            for lo in range(0, n_edges, step):
                hi = min(lo + step, n_edges)
                self._messages(a, b, e[lo:hi], w_edge, src[lo:hi], dst[lo:hi],
                               None if weight is None else weight[lo:hi], agg)
            v = F.softplus(agg.mul_(s2).add_(t2).add_(v))
        return v

    __call__ = forward
