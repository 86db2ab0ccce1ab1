"""Configuration dataclasses for RCAR (YAML in ``rcar/configs/`` + ``--set section.key=value``).

The step counts and initial temperatures default to the official scripts (facts §1):

=========  =====  =====  ======
direction   RAR    RCR    RCAR
=========  =====  =====  ======
t2i          3      2       2
i2t          2      3       2
=========  =====  =====  ======

and lambda starts at 10 (t2i) or 3 (i2t). ``steps: null`` / ``lambda_init: null`` pick those defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rcar.data import DataConfig
from shared.errors import ConfigError

Mode = Literal["baseline", "rcr", "rar", "rcar"]
Direction = Literal["t2i", "i2t"]

OFFICIAL_STEPS: dict[tuple[str, str], int] = {
    ("t2i", "rar"): 3,
    ("t2i", "rcr"): 2,
    ("t2i", "rcar"): 2,
    ("i2t", "rar"): 2,
    ("i2t", "rcr"): 3,
    ("i2t", "rcar"): 2,
}
OFFICIAL_LAMBDA: dict[str, float] = {"t2i": 10.0, "i2t": 3.0}


@dataclass
class ModelConfig:
    mode: Mode = (
        "rcar"  # baseline = official only_rcr with K=0; rcr / rar / rcar = only_rcr / only_rar / coop_rcar
    )
    direction: Direction = "t2i"  # t2i: words attend to regions; i2t: regions attend to words
    steps: int | None = None  # K; None -> the official table above (the baseline always uses 0)
    lambda_init: float | None = None  # initial softmax temperature; None -> 10 (t2i) / 3 (i2t)
    img_dim: int = 2048  # region feature size D of the precomp files
    embed_size: int = 1024
    word_dim: int = 300
    sim_dim: int = 256
    num_layers: int = 1  # GRU layers
    text_dropout: float = 0.4
    rar_dropout: float = 0.4

    def resolved_steps(self) -> int:
        if self.mode == "baseline":
            if self.steps not in (None, 0):
                raise ConfigError(
                    f"model.steps={self.steps}: the baseline has no regulator steps (use 0 or null)"
                )
            return 0
        k = OFFICIAL_STEPS[(self.direction, self.mode)] if self.steps is None else self.steps
        if k < 1:
            raise ConfigError(
                f"model.steps={k}: mode '{self.mode}' needs at least 1 step (K=0 is 'baseline')"
            )
        return k

    def resolved_lambda(self) -> float:
        return OFFICIAL_LAMBDA[self.direction] if self.lambda_init is None else self.lambda_init


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 40
    lr: float = 5e-4
    lr_decay_epoch: int = 30  # lr x 0.1 from this epoch on (official: 30 of 40 on F30K, 15 of 25 on COCO)
    warmup_epochs: int = 3  # all-negative hinge loss before, hardest negative after (3 F30K, 5 COCO)
    margin: float = 0.2
    batch_size: int = 128
    grad_clip: float = 2.0
    weight_decay: float = 0.01  # the PyTorch AdamW default the official code keeps
    max_captions_per_epoch: int | None = None  # None: every train caption each epoch (CPU runs cap it)
    log_every: int = 50
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    runs_root: str = "runs"


@dataclass
class EvalConfig:
    memory_budget_mb: int = 64  # workspace of one (image block x caption block) chunk; see evaluate.py
    image_batch: int = 128  # images per encoder call
    caption_batch: int = 256  # captions encoded (and scored against all images) at a time
    fold5: bool = False  # test metrics as the mean over folds of ``fold_images`` (COCO 1K: 5 x 1,000)
    fold_images: int = 1000


@dataclass
class RCARConfig:
    experiment: str = "mnist_scenes"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def run_name(self) -> str:
        """``<experiment>_<direction>_<mode>`` (one folder per variant under runs/rcar/)."""
        return f"{self.experiment}_{self.model.direction}_{self.model.mode}"
