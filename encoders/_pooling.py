"""Sentence pooling shared by :class:`~encoders.LocalEncoder` and the Triton ``model.py``.

The exporter copies this very file next to the Triton model, so both paths run the same code
(and the model repository stays self-contained). It therefore imports nothing outside the
standard library at run time: only tensor methods are used.

>>> import torch
>>> hidden = torch.tensor([[[3.0, 4.0], [100.0, 100.0]]])  # second token is padding
>>> mean_pool_l2_normalize(hidden, torch.tensor([[1, 0]])).tolist()
[[0.6000000238418579, 0.800000011920929]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def mean_pool_l2_normalize(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors that the mask keeps, scaled to unit L2 norm: ``[n, t, d] -> [n, d]``.

    Matches sentence-transformers' all-MiniLM-L6-v2 (mean pooling + Normalize module).
    """
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    summed = (last_hidden_state * mask).sum(dim=1)
    # clamp: an all-padding row would divide by zero
    pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
    normalized: torch.Tensor = pooled / pooled.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)
    return normalized
