"""A training run killed part-way, for the resume tests: ``arm(step, action)`` makes every trainer call
``action`` when it reaches ``step`` (just before drawing that step's batch), once.

As a script it is torchrun's entry point: ``torchrun ... tests/kill.py ARGS`` runs ``python -m lvdr ARGS``,
and with LVDR_TEST_KILL_AT=K set rank 0 sends itself SIGKILL at step K, as when a node is lost; the other
processes are stopped by torchrun, mid-collective.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

TRAINERS = ("lvdr.diffae.train", "lvdr.baselines.densenet", "lvdr.prm.train", "lvdr.vlm.run")


class Killed(Exception):
    """The simulated kill of an in-process run."""


def arm(step: int, action, setattr_=setattr) -> None:
    """Patch each trainer's ``seed_step`` so that ``action()`` runs once when a run reaches ``step``.
    ``setattr_``: pytest's monkeypatch.setattr, so that tests get the originals back."""
    import lvdr.training

    original, fired = lvdr.training.seed_step, []

    def seed_step(seed: int, current: int) -> None:
        if current == step and not fired:
            fired.append(current)
            action()
        original(seed, current)

    for name in TRAINERS:
        setattr_(importlib.import_module(name), "seed_step", seed_step)


def _raise() -> None:
    raise Killed


if __name__ == "__main__":
    from lvdr import cli

    if os.environ.get("LVDR_TEST_KILL_AT") and os.environ.get("RANK", "0") == "0":
        arm(int(os.environ["LVDR_TEST_KILL_AT"]), lambda: os.kill(os.getpid(), signal.SIGKILL))
    sys.exit(cli.main(sys.argv[1:]))
