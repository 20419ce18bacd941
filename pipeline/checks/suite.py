"""The checks every verification level runs, as one list (a check is a value passed in).

A check has a name (the key of its figures in the level's record), the threshold keys it reads
from ``verify:`` (per precision), and a compare over the reference's and the candidate's outputs
(one ``{name: array}`` per batch) that returns its figures with ``passed`` and ``reasons``.
The accuracy gate has inputs of its own (labelled data) and runs after these
(stages.verify.add_accuracy). Adding a check is one entry here (docs/architecture.md).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.checks.detections import compare_task
from pipeline.checks.tensors import compare_outputs, merge_stats
from pipeline.tasks import head_of


@dataclass(frozen=True)
class Check:
    name: str
    keys: tuple[str, ...]
    compare: Callable[[dict, list[dict], list[dict], dict], dict]   # record, refs, candidates, thresholds


def _tensors(record: dict, refs: list[dict], outs: list[dict], thr: dict) -> dict:
    ranked = ranked_outputs(record)
    merged = merge_stats([compare_outputs({k: v for k, v in r.items() if k not in ranked}, o, thr)
                          for r, o in zip(refs, outs)])
    skipped = {k: {"skipped": "NMS-free rows are ranked by score, so a tiny change reorders them: judged by "
                              "the task check"} for k in ranked if refs and k in refs[0]}
    return {**merged["outputs"], **skipped, "passed": not merged["reasons"], "reasons": merged["reasons"]}


def ranked_outputs(record: dict) -> set[str]:
    """Outputs whose rows are top-k ranked (NMS-free heads, RT-DETR): elementwise figures mean nothing there."""
    head = head_of(record)
    return {"output0"} if head.end2end or head.rtdetr else set()


CHECKS: tuple[Check, ...] = (
    Check("tensors", ("atol", "rtol", "min_cosine", "max_mean_abs"), _tensors),
    # the task's own comparison: detections, keypoints, masks, rotated boxes or class probabilities
    Check("detections", ("min_match_rate", "max_mean_score_delta", "min_iou", "max_kpt_px", "min_mask_iou",
                         "min_top1_agreement", "max_prob_delta"), compare_task),
)


def run_checks(record: dict, refs: list[dict], outs: list[dict], thr: dict) -> tuple[dict, list[str]]:
    """Every check's figures (without passed/reasons) and the reasons, each prefixed by its check."""
    figures, reasons = {}, []
    for check in CHECKS:
        fig = check.compare(record, refs, outs, thr)
        reasons += [f"{check.name}: {r}" for r in fig.pop("reasons")]
        fig.pop("passed")
        figures[check.name] = fig
    return figures, reasons
