"""Retro-FPN: Retrospective Feature Pyramid Network for point-cloud semantic segmentation (Xiang et al., ICCV
2023; official code github.com/AllenXiangX/Retro-FPN), on three backbones: Point Transformer (PTSeg50),
Point Transformer V2 (PTv2m2) and MinkUNet18A on a plain-PyTorch sparse convolution.

Model side: ``config.ModelConfig``, ``model.Segmentor`` (backbone ± Retro-FPN, deep-supervision loss),
``model.compute_hierarchy`` / ``model.HierarchyHook`` (per-batch sampling and neighbour structures, built in
the data-loader workers), ``ops`` (segment-aware kNN, FPS, grid pooling, interpolation, label pooling),
``sparse`` (coordinate manager, kernel maps, sparse conv), ``backbones/``, ``reference`` (slow loops the tests
compare against). Data side: ``data/``. See README.md.
"""
