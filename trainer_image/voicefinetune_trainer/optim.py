"""CompactAdamW: AdamW with low-precision moments and fp32-precise bf16 weights, for fitting 1.7B in 20 GB.

- Moments (`exp_avg`, `exp_avg_sq`) are stored in `state_dtype` (bf16 by default: 4 bytes per parameter instead of
  8); each step does its arithmetic in fp32 on chunks: tensors of one kind (dtypes, device, step count) are joined
  into flat buffers of at most as many elements as the largest tensor stepped, so temporaries stay the size of one
  tensor (`STEP_TEMPORARY_BYTES` per element of it) while small tensors share their operations (the 1.7B's 403
  trained tensors take about 6,000 operations per step in 128 chunks, 18,000 one tensor at a time;
  `bench/train_step.py --optimizer-ops`).
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
from collections.abc import Callable, Iterable
from typing import Any, overload

import torch

EXTENSION_SCALE = 2.0**16
EXTENSION = "extension"
# Peak bytes a step allocates beyond the weights, gradients and state, per element of its largest chunk (the largest
# tensor stepped; bf16 weights joined from several tensors cost the most): measured by a test, counted by the fit check.
STEP_TEMPORARY_BYTES = 32


def bf16_spacing(values: torch.Tensor) -> torch.Tensor:
    """The distance between adjacent bf16 numbers at each of `values` (bf16) as fp32."""
    exponent = torch.frexp(values.float()).exponent
    return torch.ldexp(torch.ones_like(values, dtype=torch.float32), exponent - 8)


def round_stochastically(values: torch.Tensor) -> torch.Tensor:
    """fp32 → bf16, rounding up or down with probabilities by distance: unbiased, so small changes survive on
    average."""
    bits = values.contiguous().view(torch.int32)
    noise = torch.randint_like(bits, 0, 1 << 16)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)


def _gather(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors joined into one flat tensor; a lone tensor is itself (no copy)."""
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat([tensor.reshape(-1) for tensor in tensors])


def _scatter(targets: list[torch.Tensor], values: torch.Tensor) -> None:
    """Copy `values` (as `_gather` joined them) back into `targets`."""
    if len(targets) == 1:
        targets[0].copy_(values)
        return
    pieces = values.split([target.numel() for target in targets])
    torch._foreach_copy_(
        targets, [piece.view_as(target) for piece, target in zip(pieces, targets, strict=True)]
    )


def _store_moment(targets: list[torch.Tensor], value: torch.Tensor) -> None:
    _scatter(targets, round_stochastically(value) if targets[0].dtype == torch.bfloat16 else value)


def master_weight(param: torch.Tensor, extension: torch.Tensor | None) -> torch.Tensor:
    """The fp32 master value of a parameter (a copy)."""
    weight = param.detach().to(torch.float32, copy=True)
    if extension is not None:
        weight += bf16_spacing(param) * extension.float() / EXTENSION_SCALE  # spacing first: a lower peak
    return weight


def store_weights(
    params: list[torch.Tensor], extensions: list[torch.Tensor] | None, weight: torch.Tensor
) -> None:
    """Write fp32 master values (as `_gather` joined them) back: the nearest bf16 into `params`, the residuals into
    `extensions`."""
    if extensions is None:
        _scatter(params, weight)
        return
    nearest = weight.to(torch.bfloat16)
    residual = (weight - nearest.float()) / bf16_spacing(nearest) * EXTENSION_SCALE
    _scatter(params, nearest)
    _scatter(extensions, residual.round_().clamp_(-32768, 32767))


def _chunks(params: list[torch.Tensor], budget: int) -> list[list[torch.Tensor]]:
    """`params` by decreasing size in runs of at most `budget` elements (a larger tensor alone)."""
    chunks: list[list[torch.Tensor]] = []
    room = 0
    for param in sorted(params, key=torch.Tensor.numel, reverse=True):
        if chunks and param.numel() <= room:
            chunks[-1].append(param)
            room -= param.numel()
        else:
            chunks.append([param])
            room = budget - param.numel()
    return chunks


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
        chunk_elements: int | None = None,
    ):
        """`chunk_elements`: the most elements updated together (None: the largest tensor stepped; 1: one tensor at
        a time)."""
        defaults = {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps}
        super().__init__(params, defaults)
        self.state_dtype = state_dtype
        self.chunk_elements = chunk_elements

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

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One AdamW step of every parameter with a gradient; ``closure``, as torch's optimizers take it,
        re-evaluates the model first and its loss is returned."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stepped = [
            param for group in self.param_groups for param in group["params"] if param.grad is not None
        ]
        if not stepped:
            return loss
        budget = self.chunk_elements or max(param.numel() for param in stepped)
        for group in self.param_groups:
            kinds: dict[tuple[Any, ...], list[torch.Tensor]] = {}
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self._state(param)
                state["step"] += 1
                kind = (state["step"], param.dtype, param.grad.dtype, param.device, EXTENSION in state)
                kinds.setdefault(kind, []).append(param)
            for (step, *_), params in kinds.items():
                for chunk in _chunks(params, budget):
                    self._update(chunk, group, step)
        return loss

    def _update(self, params: list[torch.Tensor], group: dict[str, Any], step: int) -> None:
        """One AdamW step of `params` (one kind), on fp32 copies of them joined into flat buffers."""
        lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        states = [self.state[param] for param in params]
        # step() passes only parameters with a gradient
        grad = _gather([param.grad for param in params if param.grad is not None]).float()
        exp_avg = _gather([state["exp_avg"] for state in states]).float().lerp_(grad, 1 - beta1)
        exp_avg_sq = _gather([state["exp_avg_sq"] for state in states]).float().mul_(beta2)
        exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)
        del grad
        _store_moment([state["exp_avg"] for state in states], exp_avg)
        _store_moment([state["exp_avg_sq"] for state in states], exp_avg_sq)
        extensions = [state[EXTENSION] for state in states] if EXTENSION in states[0] else None
        weight = master_weight(_gather(params), _gather(extensions) if extensions else None)
        weight.mul_(1 - lr * weight_decay)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        weight.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
        del exp_avg, exp_avg_sq, denom
        store_weights(params, extensions, weight)

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
