"""CompactAdamW: AdamW with low-precision moments and fp32-precise bf16 weights, for fitting 1.7B in 20 GB.

- Moments (`exp_avg`, `exp_avg_sq`) are stored in `state_dtype` (bf16 by default: 4 bytes per parameter instead of
  8); each step does its arithmetic in fp32, one parameter at a time, so temporaries stay the size of one tensor.
  bf16 moments are rounded stochastically: with round-to-nearest, `exp_avg_sq × 0.999` rounds back to itself
  (bf16 resolves 1/256), so the second moment would stop decaying and updates drift from AdamW's.
- A bf16 parameter gets an int16 `extension`: the rounding residual of its fp32 master value in units of 2⁻¹⁶ of
  the bf16 spacing there. bf16 value + extension hold the master weight to about fp32's 24 bits, so updates far
  below a bf16 step (lr 1e-6 at |w| ≈ 0.02 is 1/100 of one) accumulate instead of being rounded away; the model
  itself computes with the nearest bf16 value, as bf16 autocast of fp32 weights would.
- With fp32 parameters and `state_dtype=torch.float32` the arithmetic is torch.optim.AdamW's, operation for
  operation (a test checks they agree).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

EXTENSION_SCALE = 2.0**16
EXTENSION = "extension"


def bf16_spacing(values: torch.Tensor) -> torch.Tensor:
    """The distance between adjacent bf16 numbers at each of `values` (bf16) as fp32."""
    _, exponent = torch.frexp(values.float())
    return torch.ldexp(torch.ones_like(values, dtype=torch.float32), exponent - 8)


def round_stochastically(values: torch.Tensor) -> torch.Tensor:
    """fp32 → bf16, rounding up or down with probabilities by distance: unbiased, so small changes survive on
    average."""
    bits = values.contiguous().view(torch.int32)
    noise = torch.randint_like(bits, 0, 1 << 16)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)


def _store_moment(target: torch.Tensor, value: torch.Tensor) -> None:
    target.copy_(round_stochastically(value) if target.dtype == torch.bfloat16 else value)


def master_weight(param: torch.Tensor, extension: torch.Tensor | None) -> torch.Tensor:
    """The fp32 master value of a parameter (a copy)."""
    weight = param.detach().to(torch.float32, copy=True)
    if extension is not None:
        weight += extension.float() * bf16_spacing(param) / EXTENSION_SCALE
    return weight


def store_weight(param: torch.Tensor, extension: torch.Tensor | None, weight: torch.Tensor) -> None:
    """Write an fp32 master value back: the nearest bf16 into `param`, the residual into `extension`."""
    if extension is None:
        param.copy_(weight)
        return
    nearest = weight.to(torch.bfloat16)
    residual = (weight - nearest.float()) / bf16_spacing(nearest) * EXTENSION_SCALE
    param.copy_(nearest)
    extension.copy_(residual.round_().clamp_(-32768, 32767))


class CompactAdamW(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        state_dtype: torch.dtype = torch.bfloat16,
    ):
        defaults = {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps}
        super().__init__(params, defaults)
        self.state_dtype = state_dtype

    def _state(self, param: torch.Tensor) -> dict[str, Any]:
        state = self.state[param]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param, dtype=self.state_dtype)
            state["exp_avg_sq"] = torch.zeros_like(param, dtype=self.state_dtype)
        if param.dtype == torch.bfloat16 and EXTENSION not in state:
            # zero: the bf16 value is the master value (a bf16 checkpoint, or a resume without the extension)
            state[EXTENSION] = torch.zeros_like(param, dtype=torch.int16)
        return state

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: ARG002 - the Optimizer signature
        for group in self.param_groups:
            lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self._state(param)
                state["step"] += 1
                step = state["step"]
                grad = param.grad.float()
                exp_avg = state["exp_avg"].float().lerp_(grad, 1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].float().mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                del grad
                _store_moment(state["exp_avg"], exp_avg)
                _store_moment(state["exp_avg_sq"], exp_avg_sq)
                extension = state.get(EXTENSION)
                weight = master_weight(param, extension).mul_(1 - lr * weight_decay)
                denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
                weight.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
                store_weight(param, extension, weight)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for state in self.state.values():  # torch casts loaded moments to the parameter's dtype
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key] = state[key].to(self.state_dtype)

    def resume_state_dict(self) -> dict[str, Any]:
        """The state worth saving beside a checkpoint: the moments, without the weight extensions (they belong to
        the weights of this moment, not to the checkpoint's)."""
        saved = self.state_dict()
        saved["state"] = {
            index: {key: value for key, value in entry.items() if key != EXTENSION}
            for index, entry in saved["state"].items()
        }
        return saved
