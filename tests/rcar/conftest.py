"""Fixtures shared by the rcar tests."""

import logging
import sys

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation (and stalls on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the write (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def log_to_this_tests_stderr():
    """``shared.log.get_logger`` binds its handler to the ``sys.stderr`` of the first test that logs, which
    pytest closes after that test; the rcar loggers write to the current one instead."""
    yield
    for name in ("rcar", "rcar.prepare", "rcar.reproduce"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler and not isinstance(handler.stream, _CurrentStderr):
                handler.stream = _CurrentStderr()
