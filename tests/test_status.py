"""status: the status words as one str enum, read and written as the plain words."""
from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.status import Status

DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_members_are_their_words_in_comparisons_json_and_text():
    assert Status.OK == "ok" and "failed" == Status.FAILED and Status("pending") is Status.PENDING
    assert json.dumps({"status": Status.MIXED}) == '{"status": "mixed"}'
    assert json.loads(json.dumps([Status.PASSED])) == ["passed"]
    assert str(Status.CORRUPT) == f"{Status.CORRUPT}" == "corrupt"


def test_ok_and_passed_stay_two_words():
    assert Status.OK != Status.PASSED


def test_the_words_are_the_ones_the_architecture_page_lists():
    table = DOCS.read_text().split("## Status words", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `(\w+)` \|", table, re.M)) == {s.value for s in Status}
