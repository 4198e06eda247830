"""No auxiliary target: plain JEPA (the paper's collapse baseline)."""

from __future__ import annotations

from torch import Tensor

from agent.auxiliary.base import AuxTask


class NoAux(AuxTask):
    """``L_p = 0``; the encoder is trained by the dynamics loss alone."""

    name = "none"

    @property
    def active(self) -> bool:
        return False

    def target(self, data: dict[str, Tensor]) -> Tensor:
        raise RuntimeError("the 'none' auxiliary task has no target")

    def loss(self, z: Tensor, target: Tensor) -> Tensor:
        raise RuntimeError("the 'none' auxiliary task has no loss")
