"""deploy.rules: the verdicts resolve draws over sets and host facts."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import engines
from tests.deploy.test_resolve import FACTS, TRT, make_set

REPO = Path(__file__).resolve().parents[2]




def test_resolve_warns_about_a_checkpoint_newer_than_the_engine(models):
    make_set(models / "engines")
    src = models / "yolo" / "yolov8n.pt"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"a retrained checkpoint")
    r = engines("resolve", "--gpu-facts", str(FACTS / "h100-80gb-hbm3.csv"), "--runtime", f"tensorrt=={TRT}",
                "--no-link", models=models)
    assert r.exit_code == 0, r.output
    assert "model 'human': the engine was built from another yolo/yolov8n.pt" in r.output
    assert "hairnet" not in r.output.split("warning")[-1]  # no checkpoint there: nothing to compare
