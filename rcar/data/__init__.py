"""RCAR data: the official precomp loader and the construction of the embedded data set.

- ``precomp``: the SCAN / VSE++ "precomp" layout of Flickr30K / COCO (and of the embedded set), memory-mapped,
  with the official caption augmentation (Paranioar/RCAR ``lib/datasets/image_caption.py``); re-exported here.
- ``scenes``: compositional scenes of real MNIST digits and their synthetic captions (the embedded set).
- ``region_encoder``: the small detector-like ConvNet whose box features stand in for BUTD region features.

``python -m rcar.prepare`` builds the embedded set from these two generators.
"""

from rcar.data.precomp import (
    CAPTIONS_PER_IMAGE,
    MASK_TOKEN,
    SPECIAL_TOKENS,
    DataConfig,
    PrecompDataset,
    Vocab,
    augment_caption,
    build_train_dataset,
    check_vocab_coverage,
    collate_train,
    load_eval_split,
    open_split,
    read_captions,
    tokenize,
)

__all__ = [
    "CAPTIONS_PER_IMAGE",
    "MASK_TOKEN",
    "SPECIAL_TOKENS",
    "DataConfig",
    "PrecompDataset",
    "Vocab",
    "augment_caption",
    "build_train_dataset",
    "check_vocab_coverage",
    "collate_train",
    "load_eval_split",
    "open_split",
    "read_captions",
    "tokenize",
]
