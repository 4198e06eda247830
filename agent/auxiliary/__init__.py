"""Auxiliary targets ``p(o)`` for P-JEPA, one small module each, chosen by ``configs/aux/*.yaml``.

To add a target: subclass :class:`AuxTask` in a new file here, implement ``target`` and
``loss``, and add ``configs/aux/<name>.yaml`` with ``_target_`` pointing at the class.
"""

from agent.auxiliary.base import AuxTask
from agent.auxiliary.none import NoAux
from agent.auxiliary.random_net import RandomNetAux
from agent.auxiliary.reward import RewardAux

__all__ = ["AuxTask", "NoAux", "RandomNetAux", "RewardAux"]
