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

The function is exactly each member's ``eval()`` forward pass (same parameters; only the
floating-point summation order differs, ~1e-6): ``tests/test_surrogates_graphs.py``
compares both and the textbook concatenated formulation ``W·[v_i ‖ v_j ‖ e_ij]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F  # noqa: N812

from .graphs import GraphBatch
from .models import CGCNN, gated_message


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

    def __init__(self, members: Sequence[CGCNN], chunk_floats: int = 1 << 18) -> None:
        """``chunk_floats``: 64k → 256k (1 MB, the L2 of this VM's cores): light members
        (5 × 48 channels, 8 neighbours) 318 → 367 and default members 121 → 123 inferences
        per CPU s on ~110-atom cells (same process, best of 3); 4M (no chunking) 196 / 75."""
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

    def _split(self, w: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(K, H, 2H)`` maps → per member (gate block, core block), each ``(H, H)``."""
        h = self.hidden
        return [(wk[:, :h].contiguous(), wk[:, h:].contiguous()) for wk in w]

    def _node_terms(self, v: torch.Tensor, w: list[tuple[torch.Tensor, torch.Tensor]],
                    b: torch.Tensor | None) -> torch.Tensor:
        """Per-atom projections of all members, ``(N, 2·K·H)`` in the edge column layout:
        each member's block written in place by one ``addmm_`` (no batched matmul of a
        transposed view and no permuting copy: 2.1 → 1.6 ms for 2,000 atoms × 5 × 48)."""
        n, k, h = v.shape[0], self.k, self.hidden
        kh = k * h
        out = b.expand(n, -1).clone() if b is not None else v.new_zeros((n, 2 * kh))
        for m, (wg, wc) in enumerate(w):
            vm = v[:, m * h:(m + 1) * h]
            out[:, m * h:(m + 1) * h].addmm_(vm, wg)
            out[:, kh + m * h:kh + (m + 1) * h].addmm_(vm, wc)
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

    @torch.no_grad()
    def forward(self, batch: GraphBatch, rbf: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs of every member, ``(K, crystals, outputs)`` (standardised units)."""
        k, h = self.k, self.hidden
        kh = k * h
        n = batch.z.shape[0]
        e = self.rbf(batch.dist) if rbf is None else rbf
        v = self.table.index_select(1, batch.z).transpose(0, 1).reshape(n, kh)
        src, dst = batch.src, batch.dst
        # merged periodic images only occur in small cells; large cells skip the multiply
        weight = None if bool((batch.weight == 1).all()) else batch.weight[:, None]
        n_edges = src.shape[0]
        step = max(1, self.chunk_floats // (2 * kh))
        for w_self, b_self, w_nb, w_edge, s2, t2 in self.layers:
            a = self._node_terms(v, w_self, b_self)
            b = self._node_terms(v, w_nb, None)
            agg = v.new_zeros((n, kh))
            for lo in range(0, n_edges, step):
                hi = min(lo + step, n_edges)
                self._messages(a, b, e[lo:hi], w_edge, src[lo:hi], dst[lo:hi],
                               None if weight is None else weight[lo:hi], agg)
            v = F.softplus(agg.mul_(s2).add_(t2).add_(v))
        pooled = v.new_zeros((batch.num_graphs, kh)).index_add_(0, batch.graph_index, v)
        count = torch.bincount(batch.graph_index, minlength=batch.num_graphs).clamp(min=1)
        pooled = (pooled / count[:, None].to(v.dtype)).view(-1, k, h).transpose(0, 1)  # (K, B, H)
        density = torch.log(batch.volume_per_atom)[None, :, None].expand(k, -1, 1)
        x = torch.cat([pooled, density], dim=2)
        x = F.softplus(torch.baddbmm(self.head1[1], x, self.head1[0]))
        return torch.baddbmm(self.head2[1], x, self.head2[0])

    __call__ = forward
