"""INFNet data: declarative feature configs, real KuaiRand-Pure / Tenrec QB-video / MovieLens-100k loaders.

- ``dataset.py``: the data <-> model interface (``FieldSpec``, ``FeatureSpec``, ``RecDataset``, ``make_loader``).
- ``features.py``: the YAML feature config and the vectorised encoder (vocabularies, buckets, histories).
- ``sources.py``: readers of the raw files as published, with checks naming file, column and row.
- ``load.py``: ``load_dataset`` with an on-disk cache of the encoded tensors.

The file layouts and the MovieLens task construction are documented in ``data/infnet/README.md``.
"""

from infnet.data.dataset import DataConfig, FeatureSpec, FieldSpec, RecDataset, make_loader
from infnet.data.load import describe, load_dataset

__all__ = ["DataConfig", "FeatureSpec", "FieldSpec", "RecDataset", "describe", "load_dataset", "make_loader"]
