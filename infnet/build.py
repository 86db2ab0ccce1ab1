"""``build_model``: INFNet (``model.py``) or one of the Table 1 baselines (``baselines.py``) by ``model.name``.

Its own module so that neither ``model.py`` nor ``baselines.py`` has to import the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from infnet.baselines import BASELINES
from infnet.config import ModelConfig
from infnet.model import INFNet
from shared.errors import ConfigError

if TYPE_CHECKING:
    from infnet.data import FeatureSpec


def build_model(spec: FeatureSpec, cfg: ModelConfig) -> nn.Module:
    """INFNet or one of the baselines by ``cfg.name``."""
    if cfg.name == "infnet":
        return INFNet(spec, cfg)
    if cfg.name not in BASELINES:
        raise ConfigError(f"model.name '{cfg.name}' is unknown; choose infnet or one of {sorted(BASELINES)}")
    return BASELINES[cfg.name](spec, cfg)
