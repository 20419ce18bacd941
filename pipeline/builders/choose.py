"""`--backend`: auto or a builder's name, resolved to a configured builder, saying why."""
from __future__ import annotations

from pipeline.builders import BUILDERS, builder_named


def parse_target(token: str) -> str:
    """'sm86' / '86' / '8.6' -> '8.6'."""
    t = token.strip().lower().removeprefix("sm").removeprefix("_")
    if "." in t:
        major, minor = t.split(".", 1)
    elif len(t) >= 2 and t.isdigit():
        major, minor = t[:-1], t[-1]
    else:
        raise ValueError(token)
    return f"{int(major)}.{int(minor)}"


def choose_backend(name: str, targets: list[str] | None, gpus: list, log=lambda m: None):
    """Resolve --backend (auto or a name of BUILDERS) to a builder object. ``auto`` takes the
    first builder of the list usable here (the full TensorRT with a GPU, else TensorRT for RTX)."""
    if name == "auto":
        reasons = []
        for cls in BUILDERS:
            ok, why = cls.usable_here(gpus)
            if ok:
                gpu = f"; GPU {gpus[0].name}" if cls.needs_build_gpu else ""
                skipped = f"{'; '.join(reasons)}; " if reasons else ""
                ahead = "" if cls.needs_build_gpu else f"; {cls.label} builds without a GPU"
                log(f"backend: {cls.name} ({skipped}{why}{gpu}{ahead})")
                return cls.for_host(targets, gpus)
            reasons.append(why)
        name = BUILDERS[-1].name   # none usable: the last one's refusal says what to install
    return builder_named(name).for_host(targets, gpus)
