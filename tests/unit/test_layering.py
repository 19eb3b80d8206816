"""The recommender core stays free of Kafka/Faust, so it can be tested and benchmarked alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = ["streams.contracts", "streams.interest", "streams.retrieval", "streams.rerank", "streams.recommender",
        "streams.evaluate", "streams.evaluate.run", "streams.evaluate.parallel", "streams.evaluate.report",
        "streams.cli.evaluate",
        "streams.explore", "streams.feedback", "streams.learning", "streams.ranking", "streams.bench.rerank",
        "streams.bench.core", "streams.bench.snapshot", "streams.build",
        "streams.demo.movielens", "streams.demo.pace", "encoders"]


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_streaming_framework(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'faust', 'aiokafka', 'mode'}); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"
