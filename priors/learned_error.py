"""The learned prior's error table against the world's exact score.

For a cell (prompt y, timestep band [lo, hi)) the draws are n references x_0 of y (uniform),
t ~ U{lo .. hi-1}, eps ~ N(0, I), x_t = alpha_t x_0 + sigma_t eps, label k = (y, bin of x_0's
camera), and

    err(y, band) = sum_j ||eps_net(x_t^j, t_j, k_j) - eps*_k(x_t^j)||^2 / sum_j ||eps*_k(x_t^j)||^2

(a ratio of sums: the relative squared error of the draws pooled). The row ``(null)`` draws
x_0 from every prompt and evaluates the null class against the unconditional eps*. Each
cell's draws come from their own generator, seeded by (seed, row, band), so any subset of
cells is reproduced exactly (the test recomputes a few from the shipped weights).
"""

from __future__ import annotations

import torch

#: timestep bands [lo, hi) of the table
BANDS: tuple[tuple[int, int], ...] = ((0, 100), (100, 300), (300, 600), (600, 1000))
NULL_ROW = "(null)"


def band_name(band: tuple[int, int]) -> str:
    """'lo-hi' with hi inclusive.

    >>> band_name((100, 300))
    '100-299'
    """
    return f"{band[0]}-{band[1] - 1}"


def cell_generator(seed: int, row: int, band: int) -> torch.Generator:
    """The generator of one cell's draws (independent of the other cells)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + row * 101 + band)


@torch.no_grad()
def predict(unet, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, chunk: int = 64):
    """eps_net in fp32 for a batch, evaluated in chunks (weights cast to the input's dtype
    by the caller)."""
    dtype = next(unet.parameters()).dtype
    out = [
        unet(
            x_t[i : i + chunk].to(dtype), t[i : i + chunk], class_labels=labels[i : i + chunk]
        ).sample.to(torch.float32)
        for i in range(0, x_t.shape[0], chunk)
    ]
    return torch.cat(out)


@torch.no_grad()
def cell_error(unet, targets, row: int, band: int, n: int, seed: int) -> tuple[float, float]:
    """(sum ||eps_net - eps*||^2, sum ||eps*||^2) over the n draws of one cell; ``row`` is a
    prompt index, or len(prompts) for the null row."""
    table = targets.table
    generator = cell_generator(seed, row, band)
    is_null = row == len(table.prompts)
    x0, labels, _ = targets.sample(n, generator, None if is_null else row)
    if is_null:
        labels = torch.full_like(labels, table.null)
    lo, hi = BANDS[band]
    t = torch.randint(lo, hi, (n,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    abar = targets.alphas_cumprod[t][:, None]
    x_t = abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps
    side = int(round((x0.shape[1] // 3) ** 0.5))
    x_t = x_t.view(n, 3, side, side)
    exact = targets.eps(x_t, t, labels)
    net = predict(unet, x_t, t, labels)
    return float(((net - exact) ** 2).sum()), float((exact**2).sum())


def error_table(
    unet, targets, n: int, seed: int, rows: list[int] | None = None, progress=None
) -> dict:
    """{row name: {band name: err, 'all': err}} plus an ``all`` row (see module docstring).

    ``rows``: prompt indices (len(prompts) = the null row) to evaluate; default every row.
    ``progress``: optional callable advanced once per cell.
    """
    table = targets.table
    names = [*table.prompts, NULL_ROW]
    rows = list(range(len(names))) if rows is None else rows
    sums: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for b, band in enumerate(BANDS):
            err, ref = cell_error(unet, targets, row, b, n, seed)
            for key in (names[row], "all" if row < len(table.prompts) else None):
                if key is None:
                    continue
                for col in (band_name(band), "all"):
                    cell = sums.setdefault(key, {}).setdefault(col, [0.0, 0.0])
                    cell[0] += err
                    cell[1] += ref
            if progress is not None:
                progress()
    return {r: {c: e / max(ref, 1e-30) for c, (e, ref) in cols.items()} for r, cols in sums.items()}
