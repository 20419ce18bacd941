"""`python -m benchmarks` (make bench): every benchmark, each printing its table."""
from .bench_pipeline import main as bench_pipeline
from .bench_precision import main as bench_precision
from .bench_resolve import main as bench_resolve
from .bench_startup import main as bench_startup

rc = bench_startup([]) or bench_pipeline([]) or bench_resolve([]) or bench_precision([])
raise SystemExit(rc)
