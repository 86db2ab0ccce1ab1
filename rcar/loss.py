"""Hinge-based triplet ranking loss of VSE++ / SCAN, as in the official ``lib/loss.py`` (Paranioar/RCAR).

For every positive (image i, caption j) of a batch and margin α:

    cost_caption[i, j'] = [α + S(i, j') - S(i, i)]_+   (image i retrieves captions)
    cost_image[i', j]   = [α + S(i', j) - S(j, j)]_+   (caption j retrieves images)

summed over all negatives during the warm-up epochs ("VSE0") and over the hardest negative of each query
afterwards ("VSE++ max violation"), then summed over the batch.

Deviation: the official code treats only the diagonal as positive; here every pair whose image index matches
is masked (two captions of the same image in a batch are not pushed apart).
"""

from __future__ import annotations

import torch


def hinge_costs(
    sims: torch.Tensor, image_index: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """sims (B, B): row i = image of caption i, column j = caption j; image_index (B,).

    Returns the hinge of every negative, (B, B) each, 0 on positives: ``cost_caption[i, j']`` for the image
    of row i retrieving captions, ``cost_image[i', j]`` for caption j retrieving images.
    """
    diag = sims.diagonal().view(-1, 1)  # (B, 1): S(i, i)
    cost_caption = (margin + sims - diag).clamp(min=0)  # against the positive of the row (image query)
    cost_image = (margin + sims - diag.T).clamp(min=0)  # against the positive of the column (caption query)
    positive = image_index.view(-1, 1) == image_index.view(1, -1)  # (B, B), includes the diagonal
    return cost_caption.masked_fill(positive, 0), cost_image.masked_fill(positive, 0)


def hardest_negative_hinges(sims: torch.Tensor, image_index: torch.Tensor, margin: float) -> torch.Tensor:
    """The hinge of each query's hardest negative, (2B,): the B image queries, then the B caption queries.

    A constant score costs exactly ``margin`` per query, so a mean above the margin means the hardest-negative
    loss would rather collapse every score to one value (the diagnostic and the adaptive switch of
    ``rcar.train``). A hinge above the margin means the hardest negative outscores the positive.
    """
    cost_caption, cost_image = hinge_costs(sims, image_index, margin)
    return torch.cat([cost_caption.max(dim=1).values, cost_image.max(dim=0).values])


def triplet_loss(sims: torch.Tensor, image_index: torch.Tensor, margin: float, hardest: bool) -> torch.Tensor:
    """sims (B, B): row i = image of caption i, column j = caption j; image_index (B,) -> scalar loss."""
    if hardest:
        return hardest_negative_hinges(sims, image_index, margin).sum()
    cost_caption, cost_image = hinge_costs(sims, image_index, margin)
    return cost_caption.sum() + cost_image.sum()
