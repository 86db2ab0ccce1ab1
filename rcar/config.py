"""Configuration dataclasses for RCAR (YAML in ``rcar/configs/`` + ``--set section.key=value``).

The step counts and initial temperatures default to the official scripts of arXiv 2303.13371 (Paranioar/RCAR
``train_f30k_{t2i,i2t}.sh`` / ``train_coco_{t2i,i2t}.sh``):

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

from rcar.data.precomp import DataConfig
from shared.errors import ConfigError

Mode = Literal["baseline", "rcr", "rar", "rcar"]
Direction = Literal["t2i", "i2t"]
HardestNegatives = Literal["after_warmup", "never", "adaptive"]

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
    """The SCAN-style matcher with its regulators (Paranioar/RCAR ``lib/encoders.py``).

    Attributes:
        mode: baseline (the official only_rcr with K=0), rcr (only_rcr), rar (only_rar) or rcar (coop_rcar)
        direction: t2i (words attend to regions) or i2t (regions attend to words)
        steps: regulator steps K; null takes the official table above (the baseline always has 0)
        lambda_init: initial softmax temperature λ; null takes 10 (t2i) / 3 (i2t)
        img_dim: region feature size D of the precomp files (2048 for BUTD features)
        embed_size: joint embedding size d
        word_dim: word embedding size
        sim_dim: size of the alignment vectors s
        num_layers: GRU layers of the text encoder
        text_dropout: dropout on the word embeddings
        rar_dropout: dropout on RAR's keys and queries
    """

    mode: Mode = "rcar"
    direction: Direction = "t2i"
    steps: int | None = None
    lambda_init: float | None = None
    img_dim: int = 2048
    embed_size: int = 1024
    word_dim: int = 300
    sim_dim: int = 256
    num_layers: int = 1
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
    """Optimisation and run settings (the official ``train.py`` / ``arguments.py`` values by default).

    Attributes:
        seed: seed of python, numpy and torch (the rank is added under DDP)
        epochs: passes over the train captions (or over max_captions_per_epoch of them)
        lr: AdamW learning rate
        lr_decay_epoch: the lr is multiplied by 0.1 from this epoch on (official: 30 of 40 on F30K, 15 of 25 on
            COCO)
        warmup_epochs: epochs of the all-negative hinge loss before the hardest negative (official: 3 F30K,
            5 COCO)
        hardest_negatives: when the hinge loss keeps only each query's hardest negative: after_warmup (the
            official schedule, after warmup_epochs epochs of all negatives), never (all negatives throughout:
            the control), adaptive (from the epoch after the mean hardest-negative hinge on the held batches
            first falls below the margin; a deviation, see rcar/README.md)
        held_batches: fixed train batches (no augmentation, eval mode) scored after every epoch for the
            hinge diagnostics of metrics.jsonl and the adaptive switch
        collapse_score_std: an epoch whose dev similarities have a smaller std over all pairs is flagged
            collapsed (every pair scores about the same; 0.02 is a tenth of the official margin)
        keep_epoch_checkpoints: also keep every epoch's checkpoint as epoch_<k>.pt, so that runs of other
            schedules can be branched off this one (rcar.reproduce does, off the all-negatives control)
        margin: hinge margin α of the triplet loss
        batch_size: captions per optimiser step (per process under DDP); an incomplete last batch is dropped
        grad_clip: clip the gradient norm to this value (0: no clipping)
        length_groups: a training batch's captions are scored in at most this many groups of similar length,
            each padded to its own longest caption (1: the whole batch padded to its longest); same scores
        weight_decay: AdamW weight decay (the PyTorch default, which the official code keeps)
        max_captions_per_epoch: a seeded random subset of this many train captions per epoch; null: all
        log_every: a progress line every N steps when stderr is not a terminal (0: none)
        threads: torch intra-op threads; null keeps torch's default
        runs_root: folder holding runs/rcar/<experiment>_<direction>_<mode>/<timestamp>/
    """

    seed: int = 0
    epochs: int = 40
    lr: float = 5e-4
    lr_decay_epoch: int = 30
    warmup_epochs: int = 3
    hardest_negatives: HardestNegatives = "after_warmup"
    held_batches: int = 4
    collapse_score_std: float = 0.02
    keep_epoch_checkpoints: bool = False
    margin: float = 0.2
    batch_size: int = 128
    grad_clip: float = 2.0
    length_groups: int = 4
    weight_decay: float = 0.01
    max_captions_per_epoch: int | None = None
    log_every: int = 50
    threads: int | None = None
    runs_root: str = "runs"


@dataclass
class EvalConfig:
    """The exact chunked similarity matrix of ``rcar/evaluate.py`` and the test protocol.

    Attributes:
        memory_budget_mb: workspace of one (image block x caption block) chunk of pairs
        image_batch: images per image-encoder call
        caption_batch: captions encoded (and scored against all images) at a time
        fold5: test metrics as the mean over folds of fold_images images (COCO 1K: 5 x 1,000)
        fold_images: images per fold when fold5 is set
        save_test_sims: also write the test similarity matrices (test_sims.npz) into the run folder, for
            ensembles; COCO 5K's is 500 MB
    """

    memory_budget_mb: int = 64
    image_batch: int = 128
    caption_batch: int = 256
    fold5: bool = False
    fold_images: int = 1000
    save_test_sims: bool = False


@dataclass
class RCARConfig:
    """An rcar config: one model (direction and mode) on one precomp folder.

    Attributes:
        experiment: first part of the run folder name, runs/rcar/<experiment>_<direction>_<mode>/
        data: the data section
        model: the model section
        train: the train section
        eval: the evaluation section
    """

    experiment: str = "mnist_scenes"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def run_name(self) -> str:
        """``<experiment>_<direction>_<mode>`` (one folder per variant under runs/rcar/)."""
        return f"{self.experiment}_{self.model.direction}_{self.model.mode}"
