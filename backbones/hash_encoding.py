"""Multi-resolution hash encoding (Instant-NGP), bit-compatible with tinycudann's ``HashGrid``.

Level l = 0..L-1 of an input x in [0, 1]^3 (all in float32, as tinycudann computes it):

    scale_l = base_resolution * 2^(l log2(per_level_scale)) - 1,   res_l = ceil(scale_l) + 1
    size_l  = min(next_multiple(res_l^3, 8), 2^log2_hashmap_size)     table entries of F features
    pos = scale_l x + 1/2,   v = floor(pos) in Z^3,   f = pos - v
    index(v) = v_x + res_l v_y + res_l^2 v_z                   if res_l^3 <= size_l (dense)
             = (v_x * 1) xor (v_y * 2654435761) xor (v_z * 805459861)   (uint32)   otherwise
    feature_l(x) = sum_{c in {0,1}^3} w_c T[off_l + index(v + c) mod size_l],
    w_c = prod_d (c_d f_d + (1 - c_d)(1 - f_d))                (trilinear weights)

The output [N, L*F] is level-major, and the table T is one flat parameter ``params``
[sum_l size_l * F] in tinycudann's memory order (entry i of level l at rows off_l + i), so a
state dict moves between the ``torch`` and ``tcnn`` implementations unchanged.

The torch path is written for CPU speed (docs/hashgrid.md): the hash is computed in int32
(two's-complement wrap-around equals uint32 arithmetic bit for bit; the low bits of the
pattern are the uint32 modulo of a power-of-two size) on contiguous [.., N] rows (points
last, which vectorises), the 8 corners of all levels are gathered and weighted in one
``F.embedding_bag``, and the backward is an int64 ``index_add`` (``WeightedGather``;
F.embedding's backward sorts the indices and is several times slower on CPU). The backward
is written in differentiable ops, so double backward (analytic normals) works; the custom
Function has no vmap rule, so torch.func callers use autograd instead
(``HashGridNeRF.supports_vmap``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

#: tinycudann's coherent prime hash factors for dimensions x, y, z
HASH_PRIMES = (1, 2654435761, 805459861)
_INT32_PRIMES = tuple(p - (1 << 32) if p >= 1 << 31 else p for p in HASH_PRIMES)
#: the 8 corners of a cell, bit d of corner c is c_d: [8, 3]
_CORNERS = ((np.arange(8)[:, None] >> np.arange(3)[None, :]) & 1).astype(np.int32)

Implementation = Literal["auto", "torch", "tcnn"]


def level_layout(
    n_levels: int, log2_hashmap_size: int, base_resolution: int, per_level_scale: float
) -> tuple[list[float], list[int], list[int], list[bool]]:
    """(scale_l, res_l, size_l, dense_l) of every level, computed as tinycudann does (float32)."""
    log2_scale = np.float32(math.log2(per_level_scale))
    scales, resolutions, sizes, dense = [], [], [], []
    for level in range(n_levels):
        scale = np.float32(
            np.exp2(np.float32(level) * log2_scale) * np.float32(base_resolution) - np.float32(1)
        )
        res = int(math.ceil(float(scale))) + 1
        size = min(-(-(res**3) // 8) * 8, 1 << log2_hashmap_size)
        scales.append(float(scale))
        resolutions.append(res)
        sizes.append(size)
        dense.append(res**3 <= size)
    return scales, resolutions, sizes, dense


def spatial_hash(coords: torch.Tensor) -> torch.Tensor:
    """tinycudann's 3D spatial hash of integer coordinates [..., 3] (int32) -> [...] int32 whose
    bit pattern is the uint32 ``x * 1 ^ y * 2654435761 ^ z * 805459861`` (mod 2^32)."""
    x, y, z = coords.unbind(-1)
    return x ^ (y * _INT32_PRIMES[1]) ^ (z * _INT32_PRIMES[2])


class WeightedGather(torch.autograd.Function):
    """out_b = sum_c w_bc table[index_bc]: table [T, F], index [B, 8] int64, w [B, 8] -> [B, F].

    Forward: ``F.embedding_bag`` (one fused weighted gather; ~3x faster on CPU than
    index_select + multiply + sum). Backward, in differentiable ops so that double backward
    (analytic normals) works:
        d table = sum_b,c w_bc g_b e_{index_bc}   (int64 ``index_add`` per feature column;
                                                   F.embedding's backward sorts: slow on CPU)
        d w_bc  = <table[index_bc], g_b>
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table, index, w)
        return F.embedding_bag(index, table, per_sample_weights=w, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, index, w = ctx.saved_tensors
        grad_table = grad_w = None
        if ctx.needs_input_grad[0]:
            flat = index.reshape(-1)
            zeros = grad.new_zeros(table.shape[0])
            columns = [
                zeros.index_add(0, flat, (w * grad[:, f, None]).reshape(-1))
                for f in range(table.shape[1])
            ]
            grad_table = torch.stack(columns, dim=1)
        if ctx.needs_input_grad[2]:
            rows = table.index_select(0, index.reshape(-1)).view(*index.shape, -1)
            grad_w = (rows * grad[:, None, :]).sum(-1)
        return grad_table, None, grad_w


def weighted_gather(
    table: torch.Tensor, index: torch.Tensor, w: torch.Tensor, naive: bool = False
) -> torch.Tensor:
    """sum_c w[:, c] table[index[:, c]] -> [B, F] (see ``WeightedGather``); ``naive=True``
    uses F.embedding and plain autograd (the reference the fast path is tested against)."""
    if naive:
        return (w[..., None] * F.embedding(index, table)).sum(1)
    return WeightedGather.apply(table, index, w)


def level_indices(
    v: torch.Tensor, resolution: torch.Tensor, size: torch.Tensor, dense: bool
) -> torch.Tensor:
    """Table indices in [0, size_l) of the 8 corners of the cells with low vertex v [3, L, N]
    (int32), for levels that are all dense or all hashed; resolution, size [L] int32.

    Returns int32 [8, L, N], corner c = 4 c_z + 2 c_y + c_x. (Points last: every op runs on
    contiguous rows, which vectorises; small trailing dims do not.)
    """
    x, y, z = (torch.stack([c, c + 1]) for c in v)  # [2, L, N] each
    if dense:
        res = resolution[:, None]
        y, z = y * res, z * (res * res)
        index = z[:, None, None] + y[None, :, None] + x[None, None, :]
        return torch.remainder(index.reshape(8, *v.shape[1:]), size[:, None])
    y, z = y * _INT32_PRIMES[1], z * _INT32_PRIMES[2]
    index = z[:, None, None] ^ y[None, :, None] ^ x[None, None, :]
    # sizes of hashed levels are powers of two: the low bits are the uint32 modulo
    return index.reshape(8, *v.shape[1:]) & (size[:, None] - 1)


def hash_encode(
    x: torch.Tensor,
    table: torch.Tensor,
    scales: torch.Tensor,
    resolution: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    n_dense: int,
    naive: bool = False,
) -> torch.Tensor:
    """The encoding of x [N, 3] in [0, 1]^3 with table [sum_l size_l, F] -> [N, L*F].

    Level tensors (all [L]): scales (x.dtype), resolution / size / offset (int32); the first
    ``n_dense`` levels are dense, the others hashed (resolutions grow with the level).
    """
    n, n_levels = x.shape[0], scales.shape[0]
    pos = x.T[:, None, :] * scales[:, None] + 0.5  # [3, L, N]
    floor = torch.floor(pos)
    frac = pos - floor
    v = floor.to(torch.int32)
    # table rows [L, N, 8] int64: the [L * N, 8] bags embedding_bag wants, written level
    # part by level part with one transposing copy each (no concatenation)
    rows = torch.empty(n_levels, n, 8, dtype=torch.int64, device=x.device)
    for levels, dense in ((slice(0, n_dense), True), (slice(n_dense, n_levels), False)):
        if levels.start == levels.stop:
            continue
        index = level_indices(v[:, levels], resolution[levels], size[levels], dense)
        index += offset[levels, None]  # [8, L_part, N]
        rows[levels].copy_(index.permute(1, 2, 0))
    # trilinear weights w_c = prod_d (c_d f_d + (1 - c_d)(1 - f_d)), same corner order
    wx, wy, wz = (torch.stack([1 - f, f]) for f in frac)  # [2, L, N] each
    w = wz[:, None, None] * wy[None, :, None] * wx[None, None, :]  # [2, 2, 2, L, N]
    w = w.reshape(8, n_levels * n).T.contiguous()  # [L * N, 8]
    out = weighted_gather(table, rows.view(-1, 8), w, naive)  # [L * N, F]
    return out.view(n_levels, n, -1).transpose(0, 1).reshape(n, -1)


def tcnn_available() -> bool:
    """Whether tinycudann imports (it is only ever imported inside this function and below)."""
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def use_tcnn(implementation: Implementation, device: torch.device) -> bool:
    """The dispatch rule: tinycudann runs only on CUDA tensors, for ``auto`` when it imports,
    for ``tcnn`` always there (an ImportError names the fallback); CPU tensors use torch."""
    if implementation == "torch" or device.type != "cuda":
        return False
    if implementation == "tcnn":
        if not tcnn_available():
            raise ImportError(
                "hashgrid.implementation=tcnn needs tinycudann on CUDA; use 'auto' or 'torch'"
            )
        return True
    return tcnn_available()


class HashEncoding(torch.nn.Module):
    """x [N, 3] in [0, 1]^3 -> features [N, n_levels * n_features] (see module docstring).

    Parameters: ``params`` [sum_l size_l * F], uniform in [-1e-4, 1e-4] like tinycudann's
    initialisation, drawn from ``generator``. Buffers (non-persistent, derived from the
    config): the per-level layout.
    """

    def __init__(
        self,
        n_levels: int = 16,
        n_features: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        per_level_scale: float = 1.447269237440378,
        implementation: Implementation = "auto",
        compile: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.n_levels, self.n_features = n_levels, n_features
        self.log2_hashmap_size = log2_hashmap_size
        self.base_resolution, self.per_level_scale = base_resolution, per_level_scale
        self.implementation = implementation
        scales, resolutions, sizes, dense = level_layout(
            n_levels, log2_hashmap_size, base_resolution, per_level_scale
        )
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.n_entries = int(sum(sizes))
        self.register_buffer("scales", torch.tensor(scales, device=device), persistent=False)
        for name, values, dtype in (
            ("resolution", resolutions, torch.int32),
            ("size", sizes, torch.int32),
            ("offset", offsets.tolist(), torch.int32),
            ("dense", dense, torch.bool),
        ):
            self.register_buffer(name, torch.tensor(values, dtype=dtype, device=device), False)
        init = torch.rand(self.n_entries * n_features, generator=generator) * 2e-4 - 1e-4
        self.params = torch.nn.Parameter(init.to(device))
        self.n_dense = int(sum(dense))
        if dense != [True] * self.n_dense + [False] * (n_levels - self.n_dense):
            raise ValueError("hash-grid levels must grow in resolution (per_level_scale >= 1)")
        self._encode = torch.compile(hash_encode, dynamic=True) if compile else hash_encode
        self._tcnn: list[torch.nn.Module] = []  # lazily built, kept out of the state dict

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features

    def table(self) -> torch.Tensor:
        """The parameters as [sum_l size_l, F] rows (a view)."""
        return self.params.view(self.n_entries, self.n_features)

    def tcnn_config(self) -> dict:
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
        }

    def _tcnn_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._tcnn:
            import tinycudann as tcnn

            module = tcnn.Encoding(3, self.tcnn_config(), dtype=torch.float32).to(x.device)
            if module.params.numel() != self.params.numel():
                raise RuntimeError("tinycudann's hash-grid layout differs from the torch one")
            self._tcnn.append(module)
        module = self._tcnn[0]
        module.params = self.params  # share the one parameter: state dicts stay interchangeable
        return module(x).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] in [0, 1]^3 (clamped) -> [N, L*F]."""
        x = x.clamp(0.0, 1.0)
        if use_tcnn(self.implementation, x.device):
            return self._tcnn_forward(x)
        return self._encode(
            x,
            self.table().to(x.dtype),
            self.scales.to(x.dtype),
            self.resolution,
            self.size,
            self.offset,
            self.n_dense,
        )
