"""The task check: both runs' outputs decoded by the model's task decoder and compared.

Tensor tolerances alone mislead for FP16 (a nearly tied DFL bin moves one box edge by tens of
pixels while every detection stays put), so the verdict rests on what the model finds: for
boxes the match rate by class and IoU, the IoU and score deltas of matches, keypoint error
(pose), mask IoU (segment), rotated IoU (obb); for classify, top-1 agreement and the
probability delta. The decoders and comparisons are the task table's (pipeline/tasks).
"""
from __future__ import annotations

from pipeline.tasks import TASKS, head_of


def compare_task(record: dict, refs: list[dict], outs: list[dict], thr: dict) -> dict:
    """Figures and verdict over every batch's outputs (name -> array), reference against candidate."""
    head = head_of(record)
    task = TASKS[head.task]
    ref_dets = [d for r in refs for d in task.decode(head, r)]
    out_dets = [d for o in outs for d in task.decode(head, o)]
    return task.compare(ref_dets, out_dets, thr)
