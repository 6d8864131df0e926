"""Cost of naming data by content: the keys of every stage of a real-data configuration (the small
model, the four raw pools, MMLU as target and as paper evaluation) computed with an empty digest
memo (every file read and hashed), then again with the memo (only ``stat``), in fresh processes.

    python benchmarks/hash_keys.py [--data ../shared/data] [--rounds 3]

Prints the files and bytes hashed, each round's seconds (cold and memoised) and their medians:
the time of computing every key (module imports excluded), most of it the data's identity.
The cold figure includes reading the files, from the OS page cache when they were read recently.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
from pathlib import Path
from less import resolvers
resolvers.register()
from hydra import compose, initialize_config_dir
from less.paths import conf_dir
with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
    cfg = compose(config_name="config", overrides=sys.argv[1:])
from less.runner import Runner
warm = Runner(cfg, Path(cfg.cache_dir) / "out", check=False)
warm.applies("eval"), warm.ctx.device, warm.ctx.method  # the imports a key's computation triggers, untimed
t0 = time.perf_counter()
r = Runner(cfg, Path(cfg.cache_dir) / "out", check=False)
keys = {n: r.key(n) for n in r.graph if r.applies(n)}
print(json.dumps({"seconds": time.perf_counter() - t0, "keys": keys}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    data = Path(a.data).resolve()
    if not (data / "mmlu").is_dir():
        raise SystemExit(f"{data}: no real data there (--data)")
    from less.data.pools import RAW_PATHS
    from less.identity import tree_id

    files = tree_id(data, [*RAW_PATHS.values(), "mmlu"])
    print(f"data: {data}: {len(files)} files, {sum(f['size'] for f in files) / 1e6:.1f} MB read by these stages")
    cold, warm = [], []
    for i in range(a.rounds):
        with tempfile.TemporaryDirectory() as cache:
            over = ["model=small", f"data.root={data}", "pool=less_mix", "target=mmlu", "eval=paper",
                    f"cache_dir={cache}", "hydra.run.dir=.", "logger=none"]
            run = lambda: json.loads(subprocess.run([sys.executable, "-c", CHILD, *over], cwd=ROOT, check=True,  # noqa: E731
                                                    capture_output=True, text=True).stdout.splitlines()[-1])
            first, second = run(), run()
            assert first["keys"] == second["keys"]
            cold.append(first["seconds"])
            warm.append(second["seconds"])
            print(f"round {i + 1}: cold {cold[-1]:.3f} s, memoised {warm[-1]:.3f} s ({len(first['keys'])} keys)")
    print(f"median: cold {statistics.median(cold):.3f} s, memoised {statistics.median(warm):.3f} s")


if __name__ == "__main__":
    main()
