"""`python -m benchmarks` (make bench): every benchmark, each printing its table."""
from .bench_pipeline import main as bench_pipeline
from .bench_resolve import main as bench_resolve

rc = bench_pipeline([]) or bench_resolve([])
raise SystemExit(rc)
