"""``python tests/infnet/train_random_data.py train|evaluate ARGS``: the infnet CLIs on random data.

Used by the CLI tests (also under torchrun): the data loader is replaced by ``random_load_dataset``.
"""

from __future__ import annotations

import sys

import infnet.evaluate
import infnet.train
from shared.errors import run_cli
from tests.infnet.model_helpers import random_load_dataset

infnet.train.load_dataset = random_load_dataset
infnet.evaluate.load_dataset = random_load_dataset

if __name__ == "__main__":
    command, argv = sys.argv[1], sys.argv[2:]
    main = infnet.train.main if command == "train" else infnet.evaluate.main
    raise SystemExit(run_cli(main, argv))
