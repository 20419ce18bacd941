"""Push and pull time of an engine set against a local registry (Debian's docker-registry).

    python -m benchmarks.bench_registry MODELS_DIR [--runs N]

MODELS_DIR holds models.yaml and engines/<tag>/ (e.g. after `engines run` on the tests'
imgsz 320 config). Each run pushes the set to a fresh repository of a fresh registry (first
push), pushes it again (no-op), and pulls it into an empty folder; medians are printed, then
the peak Python memory of one more (traced) first push.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _registry(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "config.yml").write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                                       f"    rootdirectory: {folder / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"127.0.0.1:{port}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models_dir", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    from pipeline.engine_set import list_sets
    from pipeline.registry.client import Remote
    from pipeline.registry.sets import fetch, push, remote_sets
    s = list_sets(args.models_dir / "engines")[0]
    size = sum((s.path / rel).stat().st_size for rel in s.files()) / 2**20
    times: dict[str, list[float]] = {"push (first)": [], "push (unchanged)": [], "pull": []}
    with tempfile.TemporaryDirectory() as tmp:
        proc, host = _registry(Path(tmp))
        try:
            for i in range(args.runs):
                ref = f"{host}/bench/r{i}"
                for key in ("push (first)", "push (unchanged)"):
                    t0 = time.perf_counter()
                    out = push(s, Remote(ref, plain_http=True))
                    times[key].append(time.perf_counter() - t0)
                assert out["uploaded"] == []
                dst = Path(tmp) / f"pull{i}" / "engines"
                t0 = time.perf_counter()
                remote = Remote(ref, plain_http=True)
                (rs,), _ = remote_sets(remote, [s.tag])
                fetch(remote, rs, dst)
                times["pull"].append(time.perf_counter() - t0)
                shutil.rmtree(dst.parent)
            # memory: one more first push, traced (apart from the timed runs: tracing slows them)
            import tracemalloc
            tracemalloc.start()
            push(s, Remote(f"{host}/bench/traced", plain_http=True))
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        finally:
            proc.terminate()
    print(f"set {s.tag}: {len(s.files())} files, {size:.1f} MiB; median of {args.runs} runs, local docker-registry")
    for key, vals in times.items():
        print(f"  {key:18s} {statistics.median(vals) * 1000:8.1f} ms   (min {min(vals) * 1000:.1f}, "
              f"max {max(vals) * 1000:.1f})")
    largest = max((s.path / rel).stat().st_size for rel in s.files()) / 2**20
    print(f"  peak Python memory of a first push: {peak:.1f} MiB (largest file {largest:.1f} MiB; blobs stream)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
