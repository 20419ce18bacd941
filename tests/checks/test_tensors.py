"""checks.tensors: the elementwise figures of the tensors check."""
from __future__ import annotations

import numpy as np
import pytest


def test_tensor_stats_refuses_a_reshaped_output():
    """Same element count, other shape: was compared element by element after ravel()."""
    from pipeline.checks.tensors import tensor_stats
    ref = np.arange(12, dtype=np.float32).reshape(1, 6, 2)
    with pytest.raises(ValueError, match=r"shape mismatch: reference \(1, 6, 2\) vs \(1, 3, 4\)"):
        tensor_stats(ref, ref.reshape(1, 3, 4))
    assert tensor_stats(ref, ref)["max_abs"] == 0.0
