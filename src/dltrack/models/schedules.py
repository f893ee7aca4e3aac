"""The learning-rate schedules both CNNs offer, defined once.

- ``"cosine"``: the rate decays from its initial value to 0 along half a cosine over all
  training steps, ``lr(t) = lr0 * (1 + cos(pi * t / T)) / 2``. Keras implements it as
  ``keras.optimizers.schedules.CosineDecay``, PyTorch as
  ``torch.optim.lr_scheduler.CosineAnnealingLR``; both give ``lr0 / 2`` at ``t = T / 2`` and 0
  at ``t = T``.
- ``"constant"``: the course's fixed Adam rate.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["LR_SCHEDULES", "LRSchedule", "check_lr_schedule"]

LRSchedule = Literal["cosine", "constant"]
LR_SCHEDULES: tuple[str, ...] = ("cosine", "constant")


def check_lr_schedule(name: str) -> str:
    """Return ``name`` if it is one of :data:`LR_SCHEDULES`.

    Raises:
        ValueError: any other name; the message lists the valid ones.
    """
    if name not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {name!r}")
    return name
