"""The status words the manifest, the reports and `--json` use, as one ``str`` enum.

Members compare equal to their strings and serialise as them, so manifests written
before the enum read the same. Two words of success, on purpose, at two levels:
``OK`` is an engine entry's state (built and through its gate, so it may be published),
``PASSED`` a verification level's or run's verdict (the figures met the thresholds).
"""
from __future__ import annotations

import enum


class Status(str, enum.Enum):
    OK = "ok"              # engine entry: built, gated, published
    PASSED = "passed"      # verification level or run: thresholds met
    FAILED = "failed"      # entry or verification: refused, with its reasons
    PENDING = "pending"    # engine level not yet run on this GPU
    MIXED = "mixed"        # passed on one GPU model, failed on another
    CORRUPT = "corrupt"    # a set folder whose manifest.json cannot be read

    def __str__(self) -> str:
        return self.value
