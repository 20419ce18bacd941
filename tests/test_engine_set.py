"""engine_set: a set folder read, listed and judged (a damaged or re-named one is broken, named by
list and resolve), and its lock (the holder named, a timeout, the holder file written whole)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pipeline.engine_set import scan_sets, set_lock
from tests.conftest import engines
from tests.deploy.test_resolve import FACTS, TRT, make_set

REPO = Path(__file__).resolve().parents[1]




def test_corrupt_manifest_is_listed_and_named_by_resolve(models):
    d = make_set(models / "engines")
    (d / "manifest.json").write_text("{not json")
    r = engines("list", models=models)
    assert r.exit_code == 0 and "CORRUPT" in r.output and "not valid JSON" in r.output
    r = engines("resolve", "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--no-link", models=models)
    assert r.exit_code == 1 and "manifest.json is damaged" in r.output and "Traceback" not in r.output


def test_waiting_on_a_set_lock_names_the_holder_and_times_out(models):
    d = make_set(models / "engines")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pipeline.engine_set import set_lock\n"
        f"with set_lock(Path({str(d)!r})):\n    print('held', flush=True); time.sleep(30)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        r = engines("verify", "--lock-timeout", "1", models=models)
        assert time.monotonic() - t0 < 15
        assert r.exit_code == 1 and f"pid {holder.pid}" in r.output and "--lock-timeout" in r.output
        assert f"waiting for the lock on {d.name}: process {holder.pid}" in r.output
    finally:
        holder.kill()
        holder.wait()
    with set_lock(d, timeout=1):  # free again once the holder is gone
        pass


def test_a_folder_whose_manifest_names_another_set_is_broken(models):
    d = make_set(models / "engines")
    moved = d.with_name("trt-copied-by-hand")
    d.rename(moved)
    sets, broken = scan_sets(models / "engines")
    assert sets == [] and broken[0].path == moved and f"manifest.json is for set {d.name}" in broken[0].reason
    r = engines("list", models=models)
    assert "trt-copied-by-hand  CORRUPT" in r.output
    r = engines("verify", "--set", "trt-copied-by-hand", models=models)   # the full reason, not "not found"
    assert r.exit_code != 0 and f"rename the folder back to {d.name}/" in r.output, r.output


def test_lock_holder_file_is_written_whole_and_removed_on_release(models):
    d = make_set(models / "engines")
    holder = d.parent / f".{d.name}.holder.lock"
    with set_lock(d):
        assert holder.read_text() == str(__import__("os").getpid())
        assert not list(d.parent.glob(f".{d.name}.holder.lock.*.tmp"))
    assert not holder.exists()
