"""Start-up figures of issue 21, measured side by side in one run: a cached `engines run` of
the demo set and `engines resolve`, each as a ratio to a bare `python -c pass` timed in the
same rounds (the ratio holds on a busy machine where seconds do not); and, once, the first
`engines run` of the demo set (demo weights, three exports, three builds, verification).

Each command is a fresh process timed from spawn to exit. The rounds alternate the commands,
so a load change on the machine hits all of them alike. Children write bytecode to a private
cache (PYTHONPYCACHEPREFIX) as an installed checkout does, even where PYTHONDONTWRITEBYTECODE
is set, so the figures count start-up, not recompiling the package.

    python -m benchmarks.bench_startup [--rounds 7] [--no-first] [--check]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .bench_resolve import FACTS, TRT, make_models_dir

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"cached engines run": 13.0, "engines resolve": 8.0}   # x `python -c pass` (issue 21)
FIRST_RUN_TARGET_S = 10.0


def _env(pycache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(pycache), "PYTHONPATH": str(REPO)}


def _time(cmd: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"benchmark command failed (exit {p.returncode}): {' '.join(cmd)}\n"
                         f"{p.stderr.decode(errors='replace')[-1500:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_startup", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds of every command (default 7; medians)")
    ap.add_argument("--no-first", action="store_true",
                    help="skip timing the first run (it is still made once: the cached runs need its set)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a ratio misses its target")
    args = ap.parse_args(argv)
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        env = _env(work / "pycache")
        demo = work / "demo"
        demo.mkdir()
        shutil.copy(REPO / "models" / "models.yaml", demo / "models.yaml")
        run = [py, "-m", "pipeline", "--config", str(demo / "models.yaml"), "run"]
        _time([py, "-m", "pipeline", "--help"], env, work)   # bytecode written before anything is timed
        first = _time(run, env, work)
        models = make_models_dir(work / "resolve", 8.0)
        resolve = [py, "-m", "pipeline", "--config", str(models / "models.yaml"), "resolve",
                   "--gpu-facts", str(FACTS), "--runtime", f"tensorrt=={TRT}", "--no-link"]
        cmds = {"python -c pass": [py, "-c", "pass"], "cached engines run": run, "engines resolve": resolve}
        for cmd in cmds.values():   # warm-up round
            _time(cmd, env, work)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                times[name].append(_time(cmd, env, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(times["python -c pass"])
    print(f"\nStart-up (issue 21): medians of {args.rounds} alternating rounds, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':<22} {'median s':>9} {'min s':>7} {'x python -c pass':>17} {'target':>7}  verdict")
    missed = False
    for name, values in times.items():
        med = statistics.median(values)
        ratio = med / base
        target = TARGETS.get(name)
        verdict = "" if target is None else ("ok" if ratio <= target else "OVER")
        missed |= verdict == "OVER"
        print(f"{name:<22} {med:>9.3f} {min(values):>7.3f} {ratio:>17.1f} {f'{target:g}x' if target else '-':>7}  "
              f"{verdict}")
    if not args.no_first:
        print(f"{'first engines run':<22} {first:>9.1f} {'':>7} {'':>17} {f'{FIRST_RUN_TARGET_S:g} s':>7}  "
              f"{'ok' if first <= FIRST_RUN_TARGET_S else 'OVER'}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
