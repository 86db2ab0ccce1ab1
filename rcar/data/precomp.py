"""RCAR data pipeline: the official SCAN/VSE++ "precomp" layout, memory-mapped.

One folder per dataset, as the official code reads it (the embedded MNIST-scenes set uses the same layout)::

    <root>/{split}_ims.npy   (N, R, D) float32 region features (real BUTD data: R=36, D=2048)
    <root>/{split}_caps.txt  5 captions per image, in image order, one per line (caption j -> image j // 5)
    <root>/vocab.json        {"word2idx": {...}, "idx2word": {...}, "idx": int}; <pad>=0 <start>=1 <end>=2 <unk>=3

Splits: f30k train/dev/test, coco train/dev/testall, mnist_scenes train/dev/test.

What follows the official code (Paranioar/RCAR ``lib/datasets/image_caption.py``):
- one item per caption; the image is ``index // 5``;
- ``<mask>`` is appended to the vocabulary at run time, after the json's words;
- training caption augmentation: every token except ``<start>``/``<end>`` is hit with p=0.2; a hit token
  becomes ``<mask>`` (50%), a uniformly random id in ``[0, len(vocab))`` (10%) or is deleted (40%);
- the collate function sorts the batch by caption length, longest first (for packed RNNs), and pads with 0.

Deviations:
- Tokenisation is a lower-cased regex (words, ``'s``-style clitics, single punctuation marks) instead of
  ``nltk.word_tokenize`` (nltk is not a dependency); they agree on ordinary caption text.
- The augmentation draws come from a generator keyed by ``(seed, epoch, caption index)`` instead of the
  global ``random`` module, so a run is reproducible with any number of loader workers and a resumed run
  replays the same masks. Call ``dataset.set_epoch(epoch)`` each epoch (else every epoch repeats epoch 0's).
- The official loader accepts any caption count (``im_div``); here exactly 5 captions per image are required
  and anything else is a ``DataError``.
- Non-finite features are an error: files up to ``nan_scan_max_bytes`` are scanned in chunks when opened;
  bigger ones (real train splits are 8-30 GB) are checked image by image as they are read, and the error
  names the file and the image index. ``load_eval_split`` always scans the whole split.
- A vocabulary that knows none of a split's words, or (train split) leaves more than
  ``data.max_unknown_share`` of the words unknown, is a ``DataError`` naming both files: the official code
  would silently train on ``<unk>`` tokens. The official vocabularies leave about 1% of the train words
  unknown (words seen fewer than 4 times); 20% means the vocabulary belongs to other captions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.errors import DataError

CAPTIONS_PER_IMAGE = 5
SPECIAL_TOKENS = ("<pad>", "<start>", "<end>", "<unk>")
MASK_TOKEN = "<mask>"
AUG_PROB = 0.2  # a token is hit with this probability ...
AUG_MASK, AUG_RANDOM = 0.5, 0.1  # ... then <mask> / random id; the remaining 0.4 deletes it
_TOKEN_RE = re.compile(r"[^\W_]+|'[^\W_]+|[^\w\s]|_")
_NAN_SCAN_CHUNK_BYTES = 64 * 2**20


@dataclass
class DataConfig:
    """Where the precomp folder is and how it is read (the ``data`` section of an rcar config).

    Attributes:
        root: the precomp folder holding {split}_ims.npy and {split}_caps.txt
        vocab: the vocabulary json; "" reads <root>/vocab.json
        augment: the official caption augmentation on the train split (never on evaluation splits)
        train_split: file prefix of the training split
        dev_split: file prefix of the validation split (best dev rsum picks the checkpoint)
        test_split: file prefix of the test split ("testall" for COCO 5K)
        dev_max_images: validate on the first N dev images only (official: 1,000 = 5,000 captions); null: all
        n_regions: expected regions per image R (36 for BUTD features); null accepts any
        feat_dim: expected feature size D (2048 for BUTD features); null accepts any
        nan_scan_max_bytes: feature files up to this size are scanned for NaN/Inf when opened, bigger ones per
            image as they are read
        max_unknown_share: refuse a vocabulary that leaves more than this share of the train words <unk>
        num_workers: DataLoader worker processes for the train split
    """

    root: str = "data/rcar/mnist_scenes_precomp"
    vocab: str = ""
    augment: bool = True
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    dev_max_images: int | None = 1000
    n_regions: int | None = None
    feat_dim: int | None = None
    nan_scan_max_bytes: int = 2**30
    max_unknown_share: float = 0.2
    num_workers: int = 0

    def vocab_path(self) -> Path:
        return Path(self.vocab) if self.vocab else Path(self.root) / "vocab.json"


def tokenize(caption: str) -> list[str]:
    """Lower-case and split into words and punctuation (a stand-in for ``nltk.word_tokenize``)."""
    return _TOKEN_RE.findall(caption.lower())


class Vocab:
    """The official vocabulary json plus ``<mask>`` appended at run time."""

    def __init__(
        self,
        word2idx: dict[str, int],
        idx2word: dict[int, str],
        next_id: int | None = None,
        source: str = "<memory>",
    ):
        self.word2idx = dict(word2idx)
        self.idx2word = dict(idx2word)
        self.source = source
        if MASK_TOKEN not in self.word2idx:  # the official add_word('<mask>') takes the json's next free id
            self.word2idx[MASK_TOKEN] = max(self.word2idx.values()) + 1 if next_id is None else next_id
            self.idx2word[self.word2idx[MASK_TOKEN]] = MASK_TOKEN
        self.pad_id = self.word2idx["<pad>"]
        self.start_id = self.word2idx["<start>"]
        self.end_id = self.word2idx["<end>"]
        self.unk_id = self.word2idx["<unk>"]
        self.mask_id = self.word2idx[MASK_TOKEN]

    @classmethod
    def from_json(cls, path: str | Path) -> Vocab:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: vocabulary file not found (expected the precomp vocab json)")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(d, dict):
            raise DataError(f"{path}: expected a JSON object with keys word2idx, idx2word, idx")
        missing = [k for k in ("word2idx", "idx2word", "idx") if k not in d]
        if missing:
            raise DataError(f"{path}: vocabulary is missing key(s) {missing}; need word2idx, idx2word, idx")
        w2i, i2w, idx = d["word2idx"], d["idx2word"], d["idx"]
        if not isinstance(w2i, dict) or not isinstance(i2w, dict) or not isinstance(idx, int):
            raise DataError(f"{path}: word2idx and idx2word must be objects and idx an integer")
        if not w2i or not all(isinstance(v, int) and v >= 0 for v in w2i.values()):
            raise DataError(f"{path}: word2idx must map words to non-negative integer ids")
        specials = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        wrong = {t: w2i.get(t) for t, i in specials.items() if w2i.get(t) != i}
        if wrong:
            raise DataError(
                f"{path}: word2idx must hold <pad>=0, <start>=1, <end>=2, <unk>=3; found {wrong} "
                "(rebuild the vocabulary with the special tokens first)"
            )
        if len(set(w2i.values())) != len(w2i):
            raise DataError(f"{path}: word2idx maps two words to the same id")
        if idx <= max(w2i.values()):
            raise DataError(f"{path}: idx={idx} must exceed the largest id in word2idx ({max(w2i.values())})")
        try:
            idx2word = {int(k): v for k, v in i2w.items()}
        except ValueError as exc:
            raise DataError(f"{path}: idx2word keys must be integer strings ({exc})") from exc
        return cls(w2i, idx2word, next_id=idx, source=str(path))

    def __len__(self) -> int:
        """The embedding size: largest id + 1 (= the number of words, <mask> included, for real vocab files)."""
        return max(self.word2idx.values()) + 1

    def __call__(self, word: str) -> int:
        return self.word2idx.get(word, self.unk_id)

    def encode(self, caption: str) -> list[int]:
        """``<start> w1 ... wn <end>`` ids; unknown words map to ``<unk>``."""
        return [self.start_id, *(self(t) for t in tokenize(caption)), self.end_id]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.idx2word.get(int(i), "<unk>") for i in ids)


def augment_caption(ids: list[int], vocab_size: int, mask_id: int, rng: np.random.Generator) -> list[int]:
    """Official train-time augmentation of an encoded caption (first and last ids are <start>/<end>).

    Each inner token is hit with p=0.2; a hit becomes <mask> (50%), a random id in [0, vocab_size) (10%), or
    is deleted (40%).
    """
    inner = ids[1:-1]
    hit = rng.random(len(inner)) < AUG_PROB
    kind = rng.random(len(inner))  # which of the three actions, for hit tokens
    rand_ids = rng.integers(0, vocab_size, size=len(inner))
    out = [ids[0]]
    for tok, h, k, r in zip(inner, hit, kind, rand_ids):
        if not h:
            out.append(tok)
        elif k < AUG_MASK:
            out.append(mask_id)
        elif k < AUG_MASK + AUG_RANDOM:
            out.append(int(r))
        # else: deleted
    out.append(ids[-1])
    return out


# --------------------------------------------------------------------------------------------------- files
def split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    root = Path(root)
    return root / f"{split}_ims.npy", root / f"{split}_caps.txt"


def read_captions(path: Path) -> list[str]:
    """One caption per line; an empty line is an error naming its line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    captions = text.split("\n")
    if captions and captions[-1] == "":  # the newline that ends the last line
        captions.pop()
    out = []
    for lineno, line in enumerate(captions, start=1):
        line = line.strip()
        if not line:
            raise DataError(f"{path}: line {lineno} is an empty caption (every line must hold one caption)")
        out.append(line)
    return out


def open_features(path: Path) -> np.ndarray:
    """Memory-map ``{split}_ims.npy`` and check it is a 3-d float array."""
    try:
        feats = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as a .npy array ({exc})") from exc
    if not isinstance(feats, np.ndarray):
        raise DataError(f"{path}: expected one .npy array, got {type(feats).__name__}")
    if feats.ndim != 3:
        raise DataError(f"{path}: features must have shape (N, R, D), got shape {feats.shape}")
    if not np.issubdtype(feats.dtype, np.floating):
        raise DataError(f"{path}: features must be floating point (float32), got dtype {feats.dtype}")
    if feats.shape[0] == 0 or feats.shape[1] == 0 or feats.shape[2] == 0:
        raise DataError(f"{path}: empty feature array of shape {feats.shape}")
    return feats


def check_finite(feats: np.ndarray, path: Path, start: int = 0, stop: int | None = None) -> None:
    """Scan images [start, stop) in ~64 MB chunks; raise naming the file and the first bad image."""
    stop = feats.shape[0] if stop is None else stop
    per_image = max(1, feats[0].nbytes)
    chunk = max(1, _NAN_SCAN_CHUNK_BYTES // per_image)
    for lo in range(start, stop, chunk):
        block = np.asarray(feats[lo : min(lo + chunk, stop)])
        ok = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
        if not ok.all():
            bad = lo + int(np.argmin(ok))
            raise DataError(f"{path}: image {bad} has NaN/Inf features (re-extract or drop that image)")


def open_split(
    root: str | Path,
    split: str,
    n_regions: int | None = None,
    feat_dim: int | None = None,
    max_images: int | None = None,
) -> tuple[np.ndarray, list[str], Path]:
    """Open and validate one split: (features memmap (N, R, D), 5N caption strings, features path)."""
    ims_path, caps_path = split_paths(root, split)
    missing = [str(p) for p in (ims_path, caps_path) if not p.is_file()]
    if missing:
        raise DataError(
            f"split '{split}' not found: missing {', '.join(missing)} "
            f"(a precomp folder needs {split}_ims.npy and {split}_caps.txt; see data/rcar/README.md)"
        )
    feats = open_features(ims_path)
    n, r, d = feats.shape
    if n_regions is not None and r != n_regions:
        raise DataError(f"{ims_path}: expected {n_regions} regions per image, got shape {feats.shape}")
    if feat_dim is not None and d != feat_dim:
        raise DataError(f"{ims_path}: expected feature dim {feat_dim}, got shape {feats.shape}")
    captions = read_captions(caps_path)
    if len(captions) != CAPTIONS_PER_IMAGE * n:
        raise DataError(
            f"{caps_path}: {len(captions)} captions but {ims_path} holds {n} images; "
            f"need exactly {CAPTIONS_PER_IMAGE} captions per image ({CAPTIONS_PER_IMAGE * n} lines)"
        )
    if max_images is not None and max_images < n:
        feats = feats[:max_images]
        captions = captions[: CAPTIONS_PER_IMAGE * max_images]
    return feats, captions, ims_path


def check_vocab_coverage(
    vocab: Vocab, encoded: list[list[int]], caps_path: Path, max_unknown_share: float | None = None
) -> float:
    """The share of caption words (``<start>``/``<end>`` not counted) that ``vocab`` maps to ``<unk>``.

    A vocabulary that knows none of the words, or (with ``max_unknown_share``) leaves more of them unknown
    than that, is a ``DataError`` naming the vocabulary and the captions file.
    """
    n_words = sum(len(ids) - 2 for ids in encoded)
    n_unknown = sum(tok == vocab.unk_id for ids in encoded for tok in ids[1:-1])
    share = n_unknown / max(1, n_words)
    if n_words and n_unknown == n_words:
        raise DataError(
            f"{vocab.source} knows none of the {n_words} words of {caps_path}: every word would be <unk>; "
            "point data.vocab at the vocabulary built for these captions"
        )
    if max_unknown_share is not None and share > max_unknown_share:
        raise DataError(
            f"{vocab.source} leaves {share:.0%} of the {n_words} words of {caps_path} unknown "
            f"(data.max_unknown_share={max_unknown_share}); point data.vocab at the vocabulary built for "
            "these captions, or raise data.max_unknown_share"
        )
    return share


# ------------------------------------------------------------------------------------------------ datasets
class PrecompDataset(Dataset):
    """One item per caption: (image_feats (R, D) float32, caption_ids (L,) long, caption_index, image_index)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        vocab: Vocab,
        augment: bool,
        seed: int = 0,
        *,
        max_images: int | None = None,
        n_regions: int | None = None,
        feat_dim: int | None = None,
        nan_scan_max_bytes: int = 2**30,
        max_unknown_share: float | None = None,
    ):
        self.root, self.split, self.vocab = Path(root), split, vocab
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self.features, captions, self.features_path = open_split(root, split, n_regions, feat_dim, max_images)
        self.n_images, self.n_regions, self.feat_dim = (int(s) for s in self.features.shape)
        self.n_captions = len(captions)
        self.captions = [vocab.encode(c) for c in captions]
        self.unknown_share = check_vocab_coverage(
            vocab, self.captions, split_paths(root, split)[1], max_unknown_share
        )
        # Small files are checked whole now; big ones image by image in __getitem__.
        self._check_each_item = self.features.nbytes > nan_scan_max_bytes
        if not self._check_each_item:
            check_finite(self.features, self.features_path)

    def __getstate__(self) -> dict:
        # Loader workers started by spawn/forkserver re-open the memmap instead of receiving a pickled copy.
        state = self.__dict__.copy()
        state["features"] = None
        state["_n_kept_images"] = self.n_images
        return state

    def __setstate__(self, state: dict) -> None:
        n = state.pop("_n_kept_images")
        self.__dict__.update(state)
        self.features = open_features(self.features_path)[:n]

    def set_epoch(self, epoch: int) -> None:
        """Key the augmentation draws by epoch (call once per epoch, like ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_captions

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        image_index = index // CAPTIONS_PER_IMAGE
        feats = np.array(self.features[image_index], dtype=np.float32)  # (R, D), copied out of the memmap
        if self._check_each_item and not np.isfinite(feats).all():
            raise DataError(f"{self.features_path}: image {image_index} has NaN/Inf features")
        ids = self.captions[index]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            ids = augment_caption(ids, len(self.vocab), self.vocab.mask_id, rng)
        return torch.from_numpy(feats), torch.tensor(ids, dtype=torch.long), index, image_index


def collate_train(batch: list[tuple[torch.Tensor, torch.Tensor, int, int]]) -> dict[str, torch.Tensor]:
    """Stack images, pad captions with 0; sorted by caption length, longest first (as the official code)."""
    batch = sorted(batch, key=lambda item: len(item[1]), reverse=True)
    images, captions, cap_idx, img_idx = zip(*batch)
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)
    padded = torch.zeros(len(captions), int(lengths.max()), dtype=torch.long)  # (B, L), <pad>=0
    for i, c in enumerate(captions):
        padded[i, : len(c)] = c
    return {
        "images": torch.stack(images),  # (B, R, D)
        "captions": padded,
        "lengths": lengths,  # (B,)
        "caption_index": torch.tensor(cap_idx, dtype=torch.long),
        "image_index": torch.tensor(img_idx, dtype=torch.long),
    }


def load_eval_split(
    root: str | Path,
    split: str,
    vocab: Vocab,
    max_images: int | None = None,
    n_regions: int | None = None,
    feat_dim: int | None = None,
) -> tuple[np.ndarray, list[list[int]]]:
    """Features (N, R, D) memmap, each image once, and the 5N encoded captions (no augmentation).

    ``max_images`` keeps the first images and their captions (the official dev check uses 1,000 images).
    The whole split is scanned for NaN/Inf.
    """
    feats, captions, ims_path = open_split(root, split, n_regions, feat_dim, max_images)
    check_finite(feats, ims_path)
    encoded = [vocab.encode(c) for c in captions]
    check_vocab_coverage(vocab, encoded, split_paths(root, split)[1])
    return feats, encoded


def build_train_dataset(cfg: DataConfig, vocab: Vocab, seed: int) -> PrecompDataset:
    """The train split of ``cfg`` with augmentation as configured (and its vocabulary coverage checked)."""
    return PrecompDataset(
        cfg.root,
        cfg.train_split,
        vocab,
        augment=cfg.augment,
        seed=seed,
        n_regions=cfg.n_regions,
        feat_dim=cfg.feat_dim,
        nan_scan_max_bytes=cfg.nan_scan_max_bytes,
        max_unknown_share=cfg.max_unknown_share,
    )
