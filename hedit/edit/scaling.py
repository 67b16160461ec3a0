"""The math of an H-neuron edit.

Scaling neuron j's activation by alpha before down_proj equals scaling column j of
``down_proj.weight`` (shape [hidden, intermediate]) by alpha: W (alpha * z) = (W diag(alpha)) z.
Every result is checked to be finite in its dtype: a finite alpha can still overflow (1e6 in float16).
"""

from __future__ import annotations

import torch

from hedit.errors import HeditError


def check_finite(t: torch.Tensor, what: str, alphas: list[float]) -> torch.Tensor:
    """``t`` when every value is finite, else a HeditError naming ``what`` and the alphas."""
    if not bool(torch.isfinite(t).all()):
        big = max(alphas, key=abs)
        raise HeditError(
            f"{what}: alpha {big:g} makes values that overflow {str(t.dtype).removeprefix('torch.')}; "
            "use a smaller alpha"
        )
    return t


def scale_columns_(
    weight: torch.Tensor, columns: list[int], alphas: list[float], name: str = "down_proj weight"
) -> torch.Tensor:
    """Multiply the given columns by their alphas, in float32, cast back to the weight's dtype, in place."""
    idx = torch.tensor(columns, dtype=torch.long)
    a = torch.tensor(alphas, dtype=torch.float32)
    scaled = check_finite((weight[:, idx].to(torch.float32) * a).to(weight.dtype), name, alphas)
    weight[:, idx] = scaled
    return weight


def scale_rows_(
    weight: torch.Tensor, rows: list[int], alphas: list[float], name: str = "up_proj weight"
) -> torch.Tensor:
    """Multiply the given rows by their alphas, in float32, cast back to the weight's dtype, in place."""
    idx = torch.tensor(rows, dtype=torch.long)
    a = torch.tensor(alphas, dtype=torch.float32).unsqueeze(1)
    weight[idx] = check_finite((weight[idx].to(torch.float32) * a).to(weight.dtype), name, alphas)
    return weight


def scale_along_(t: torch.Tensor, axis: int, index: list[int], alphas: list[float], name: str) -> torch.Tensor:
    """Rows (axis 0) or columns (axis 1) of ``t`` times their alphas, in place; a 1-D ``t`` is one column."""
    if t.dim() == 1:
        return scale_rows_(t.unsqueeze(1), index, alphas, name).squeeze(1)
    return scale_rows_(t, index, alphas, name) if axis == 0 else scale_columns_(t, index, alphas, name)


def input_scale(intermediate_size: int, columns: list[int], alphas: list[float]) -> torch.Tensor:
    """The IA3-style vector: 1 everywhere, alpha at the chosen neurons (float32)."""
    v = torch.ones(intermediate_size, dtype=torch.float32)
    v[torch.tensor(columns, dtype=torch.long)] = torch.tensor(alphas, dtype=torch.float32)
    return check_finite(v, "IA3 vector", alphas)


def lora_factors(
    weight: torch.Tensor, columns: list[int], alphas: list[float], rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact rank-``rank`` factors (A, B) with B @ A = W[:, S] diag(alpha - 1) placed at columns S.

    A [rank, intermediate] has one-hot rows selecting S (zero rows pad up to ``rank``);
    B [hidden, rank] holds the scaled columns. Both float32.
    """
    return lora_factors_of(weight[:, columns], weight.shape[1], columns, alphas, rank)


def lora_factors_of(
    picked: torch.Tensor, inter: int, columns: list[int], alphas: list[float], rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``lora_factors`` from the chosen columns alone (``picked`` = W[:, S], of a W with ``inter``
    columns): what an adapter of a large source reads."""
    k = len(columns)
    hidden = picked.shape[0]
    a = torch.zeros(rank, inter, dtype=torch.float32)
    a[torch.arange(k), torch.tensor(columns, dtype=torch.long)] = 1.0
    b = torch.zeros(hidden, rank, dtype=torch.float32)
    b[:, :k] = picked.to(torch.float32) * (torch.tensor(alphas, dtype=torch.float32) - 1.0)
    return a, check_finite(b, "LoRA B", alphas)
