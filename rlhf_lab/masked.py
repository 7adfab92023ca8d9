"""Masked reductions and input validation shared by every function on ``[batch, response_len]``.

A ``mask`` is a float (or bool) tensor of the same shape as the data: 1 for real response tokens,
0 for padding after EOS. ``None`` means all ones. Padded positions must never change a result, so
every reduction here multiplies by the mask *and* replaces padded values by zero first (a NaN or
inf sitting in a padded slot would otherwise leak through ``0 * nan``).

Validation that reads a tensor's values (a mask of only 0 and 1, no NaN, a non-empty mask) makes
the host wait for the device: ``bool(tensor)`` is a synchronization on a GPU. The functions that
a training loop calls many times per step therefore take ``validate=True`` (check everything,
the default for direct callers) or ``validate=False`` (the caller has checked its inputs once,
e.g. the PPO trainer at its boundary: the loop then never waits for the device).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

Tensor = torch.Tensor


def as_mask(mask: Optional[Tensor], like: Tensor, name: str = "mask", validate: bool = True) -> Tensor:
    """Return ``mask`` as a tensor of ``like``'s dtype and shape (all ones when ``None``).

    ``validate=False`` skips the check that it holds only 0 and 1 (the one check that reads values)."""
    if mask is None:
        return torch.ones_like(like)
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {tuple(like.shape)}")
    mask = mask.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)
    if validate and not torch.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{name} must contain only 0 and 1")
    return mask


def check_same_shape(**tensors: Tensor) -> None:
    """Raise ``ValueError`` naming the first argument whose shape differs from the first one's."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.shape != first.shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but {first_name} has shape {tuple(first.shape)}"
            )


def check_token_tensor(name: str, x: Tensor) -> None:
    """A per-token quantity must be a floating-point ``[batch, response_len]`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, response_len], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with padded positions set to 0 (a NaN there would survive ``0 * x``)."""
    return torch.where(mask != 0, x, torch.zeros_like(x))


def check_finite(name: str, x: Tensor, mask: Optional[Tensor] = None) -> None:
    """Raise if ``x`` holds NaN or inf at a real (unmasked) position."""
    bad = ~torch.isfinite(x)
    if mask is not None:
        bad = bad & (mask != 0)
    if bool(bad.any()):
        raise ValueError(f"{name} contains NaN or inf")


def check_scalar(name: str, value: float, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Validate a hyper-parameter such as beta (>= 0) or clip_eps (> 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def masked_sum(x: Tensor, mask: Optional[Tensor] = None, dim=None) -> Tensor:
    """Σ mask·x over ``dim`` (all dims when ``None``), padded values zeroed first."""
    m = as_mask(mask, x)
    xm = zero_padding(x, m)
    return xm.sum() if dim is None else xm.sum(dim=dim)


def masked_mean(x: Tensor, mask: Optional[Tensor] = None, dim=None, name: str = "mask",
                validate: bool = True) -> Tensor:
    """Σ mask·x / Σ mask. An all-zero mask has no mean and raises ``ValueError`` (with
    ``validate=False`` nothing is checked: the caller guarantees a 0/1 mask with a real token)."""
    m = as_mask(mask, x, name, validate=validate)
    count = m.sum() if dim is None else m.sum(dim=dim)
    if validate and bool((count == 0).any()):
        raise ValueError(f"{name} is all zeros where a mean is needed")
    xm = zero_padding(x, m)
    return (xm.sum() if dim is None else xm.sum(dim=dim)) / count


def masked_var(x: Tensor, mask: Optional[Tensor] = None, unbiased: bool = True, name: str = "mask") -> Tensor:
    """Variance over the real tokens (Bessel-corrected by default, as TRL and OpenAI's lm-human-preferences)."""
    m = as_mask(mask, x, name)
    mean = masked_mean(x, m, name=name)
    centered = zero_padding(x - mean, m)
    var = (centered**2).sum() / m.sum()
    if unbiased:
        n = m.sum()
        if n < 2:
            raise ValueError(f"{name} must select at least 2 tokens for an unbiased variance")
        var = var * n / (n - 1)
    return var
