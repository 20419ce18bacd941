"""checks.suite: the one list of checks every verification level runs, on hand-made outputs:
figures under each check's name, reasons prefixed by it, ranked NMS-free rows left to the task
check, and every threshold key a check reads known to models.yaml's `verify:`."""
from __future__ import annotations

import numpy as np

from pipeline.checks.suite import CHECKS, ranked_outputs, run_checks
from pipeline.config import DEFAULT_VERIFY

RECORD = {"metadata": {"names": "{0: 'person', 1: 'hat'}", "task": "detect", "imgsz": "[640, 640]"}}
ROWS = np.asarray([[50, 50, 20, 20, 0.9, 0.1], [300, 300, 40, 40, 0.1, 0.8]], np.float32).T[None]   # raw layout


def test_identical_outputs_pass_every_check_with_figures_under_its_name():
    figures, reasons = run_checks(RECORD, [{"output0": ROWS}], [{"output0": ROWS.copy()}], DEFAULT_VERIFY["fp32"])
    assert reasons == [] and list(figures) == [c.name for c in CHECKS]
    assert figures["tensors"]["output0"]["cosine"] == 1.0
    assert figures["detections"]["matched"] == figures["detections"]["ref_detections"] == 2


def test_a_moved_box_fails_both_checks_each_reason_named_by_its_check():
    moved = ROWS.copy()
    moved[0, 0, 1] += 100                           # the second box moves 100 px: no match
    _, reasons = run_checks(RECORD, [{"output0": ROWS}], [{"output0": moved}], DEFAULT_VERIFY["fp32"])
    assert any(r.startswith("tensors: output0: cosine") for r in reasons)
    assert "detections: match rate 0.500 < 0.98 (1 of 2 detections)" in reasons
    assert all(r.split(":")[0] in {c.name for c in CHECKS} for r in reasons)


def test_nms_free_rows_are_judged_by_the_task_check_only():
    e2e = {"metadata": {**RECORD["metadata"], "end2end": "True"}}
    assert ranked_outputs(e2e) == {"output0"} and ranked_outputs(RECORD) == set()
    rows = np.asarray([[[10, 10, 30, 30, 0.9, 1], [100, 100, 130, 130, 0.8, 0]]], np.float32)
    reordered = rows[:, ::-1].copy()                 # the same objects, ranked the other way
    figures, reasons = run_checks(e2e, [{"output0": rows}], [{"output0": reordered}], DEFAULT_VERIFY["fp16"])
    assert reasons == [] and "skipped" in figures["tensors"]["output0"]
    assert figures["detections"]["match_rate"] == 1.0


def test_every_key_a_check_reads_is_a_verify_key_at_every_precision():
    for precision, thresholds in DEFAULT_VERIFY.items():
        assert {k for c in CHECKS for k in c.keys} <= set(thresholds), precision
