"""Run run.py and SIGKILL the process at an exact point: deterministic fault injection for tests.

    python -m tests.kill_at <where>:<n> [run.py arguments]

``warmup:<n>`` / ``train:<n>``: inside the n-th optimizer step of the Trainer that builds that
stage; ``features:<n>``: right after the n-th feature chunk file is written. Nothing else changes.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    where, n = sys.argv[1].split(":")
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1
        if count == int(n):
            os.kill(os.getpid(), signal.SIGKILL)

    if where == "features":
        import less.gradients.store as store

        write_chunk = store.write_chunk

        def counted_write_chunk(*args, **kwargs):
            write_chunk(*args, **kwargs)
            tick()
        store.write_chunk = counted_write_chunk
    else:
        from transformers import Trainer

        training_step = Trainer.training_step

        def counted_training_step(self, *args, **kwargs):
            if f"/{where}/.tmp-" in str(self.args.output_dir):
                tick()
            return training_step(self, *args, **kwargs)
        Trainer.training_step = counted_training_step
    sys.argv = [str(ROOT / "run.py"), *sys.argv[2:]]
    runpy.run_path(str(ROOT / "run.py"), run_name="__main__")


if __name__ == "__main__":
    main()
