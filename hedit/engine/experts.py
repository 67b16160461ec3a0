"""Expert neurons inside transformers' fused experts modules.

transformers holds a mixture's experts as one module with stacked 3-D weights (``gate_up_proj``
[experts, 2I, H] and ``down_proj`` [experts, H, I], or transposed) and computes every expert in one call,
so no module's input is an expert's activation. ``ExpertsScope`` replaces that module's forward, while the
scope lasts, with one that computes each routed expert as transformers' eager path does, with the module's
own gate (``_apply_gate``: the family's activation, clamps and interleaving included), layout flags
(``is_transposed``, ``has_bias``, ``has_gate``) and weights, and exposes the activation ``z`` of expert e
at the tokens routed to it: ``scale`` multiplies it (in float32) before the down projection, ``capture``
sees it with the routing weights. Scaling ``z[:, j]`` of expert e by alpha is scaling column j of that
expert's down_proj, which is what ``hedit edit`` writes.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn.functional as F

# scale(expert, token rows) -> float32 factors broadcastable to [tokens, I], or None (unscaled)
Scale = Callable[[int, torch.Tensor], "torch.Tensor | None"]
# capture(expert, token rows, routing weights [tokens], z [tokens, I])
Capture = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    y = x @ w if transposed else F.linear(x, w)
    return y if b is None else y + b


def expert_weights(module: torch.nn.Module, which: str) -> torch.Tensor:
    """The stacked weight: ``up`` (gate_up_proj, or up_proj when the experts have no gate) or ``down``."""
    if which == "down":
        return module.down_proj
    return module.gate_up_proj if module.has_gate else module.up_proj


def down_column_norms(module: torch.nn.Module, transposed: bool) -> torch.Tensor:
    """[experts, I]: ||W_down_e[:, j]|| of every expert's down projection (``transposed``: [E, I, H],
    the registry's flag), float32."""
    w = module.down_proj.detach().to(torch.float32)
    return w.norm(dim=2) if transposed else w.norm(dim=1)


def _scaled(z: torch.Tensor, scale: Scale | None, expert: int, tok: torch.Tensor) -> torch.Tensor:
    """Expert ``expert``'s activation at ``tok`` times ``scale``'s factors (in float32), or as it is."""
    f = scale(expert, tok) if scale is not None else None
    return z if f is None else (z.to(torch.float32) * f.to(z.device)).to(z.dtype)


def experts_forward(
    module: torch.nn.Module,
    hidden: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    scale: Scale | None = None,
    capture: Capture | None = None,
) -> torch.Tensor:
    """The experts' output for ``hidden`` [tokens, H] routed by ``top_k_index`` / ``top_k_weights`` [tokens, k]."""
    out = torch.zeros_like(hidden)
    transposed, bias = module.is_transposed, module.has_bias
    up_w = expert_weights(module, "up")
    up_b = (module.gate_up_proj_bias if module.has_gate else module.up_proj_bias) if bias else None
    hit = torch.unique(top_k_index)
    for e in hit.tolist():
        if not 0 <= e < module.num_experts:
            continue  # expert-parallel sentinels
        tok, pos = torch.where(top_k_index == e)
        x = hidden[tok]
        h = _linear(x, up_w[e], up_b[e] if bias else None, transposed)
        z = module._apply_gate(h) if module.has_gate else module.act_fn(h)
        z = _scaled(z, scale, e, tok)
        g = top_k_weights[tok, pos]
        if capture is not None:
            capture(e, tok, g, z)
        y = _linear(z, module.down_proj[e], module.down_proj_bias[e] if bias else None, transposed)
        if getattr(module, "has_post_expert_norm", False):  # transformers 5.20 on; none before
            y = module.post_expert_norm(y)
        out.index_add_(0, tok, (y * g.unsqueeze(-1)).to(out.dtype))
    return out


def input_routed_forward(
    module: torch.nn.Module, rows: torch.Tensor, scale: Scale | None = None, capture: Capture | None = None
) -> torch.Tensor:
    """The experts' outputs where the router weights the experts' input (``routing: input``, Llama 4):
    ``rows`` [E x tokens, H] holds expert e's input g_e,t * x_t in block e, exactly 0 where the router did
    not send t to e (its score is sigmoid(-inf)); weights ``gate_up_proj`` [E, H, 2I] (gate first) and
    ``down_proj`` [E, I, H]. An expert's output enters the layer's unweighted, so ``capture`` gets g = 1."""
    e_count = module.gate_up_proj.shape[0]
    x = rows.view(e_count, -1, rows.shape[-1])
    out = torch.zeros_like(x)
    for e in range(e_count):
        tok = torch.where(x[e].ne(0).any(dim=-1))[0]
        if not len(tok):
            continue
        gate, up = (x[e, tok] @ module.gate_up_proj[e]).chunk(2, dim=-1)
        z = up * module.act_fn(gate)
        z = _scaled(z, scale, e, tok)
        if capture is not None:
            capture(e, tok, torch.ones(len(tok), device=z.device), z)
        out[e, tok] = (z @ module.down_proj[e]).to(out.dtype)
    return out.view(-1, rows.shape[-1])


class ExpertsScope:
    """While entered, ``module`` runs ``experts_forward`` (or ``input_routed_forward``, for ``routing``
    ``input``: the registry's) with ``scale`` and ``capture``."""

    def __init__(
        self,
        module: torch.nn.Module,
        scale: Scale | None = None,
        capture: Capture | None = None,
        routing: str = "output",
    ):
        self.module, self.scale, self.capture, self.routing = module, scale, capture, routing

    def __enter__(self) -> ExpertsScope:
        if self.routing == "input":

            def forward(mod, rows, *args, **kwargs):
                return input_routed_forward(mod, rows, self.scale, self.capture)

        else:

            def forward(mod, hidden, top_k_index, top_k_weights, *args, **kwargs):
                return experts_forward(mod, hidden, top_k_index, top_k_weights, self.scale, self.capture)

        self.module.forward = types.MethodType(forward, self.module)
        return self

    def __exit__(self, *exc) -> None:
        self.module.__dict__.pop("forward", None)
