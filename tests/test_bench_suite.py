"""`make bench`'s page: docs/benchmarks.md is what bench/suite.py makes of its template and the
latest results (an edit by hand would be lost at the next run), and a result shows on it."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.conftest import ROOT


def _suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_suite", ROOT / "bench" / "suite.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_suite"] = module
    spec.loader.exec_module(module)
    return module


def test_the_page_is_the_template_filled_with_the_latest_results():
    suite = _suite()
    assert (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8") == \
        suite.render_page(suite.load_results()), "run `python bench/suite.py --page-only`"


def test_a_result_shows_its_table_headline_and_machine():
    suite = _suite()
    machine = {"cpu": "Test CPU 9000", "cores": "2", "memory": "24 GiB", "system": "Linux 6",
               "python": "3.11.7", "commit": "abc1234", "date": "2026-11-29 08:00 UTC"}
    output = "┏━━━┓\n│ table │\n┗━━━┛\nratio 0.91 peak_rss_mb 78"
    page = suite.render_page({"import": {"output": output, "headline": suite.headline(output),
                                         "machine": machine, "seconds": 42}})
    assert "| import | `bench/import.py` | ratio 0.91 peak_rss_mb 78 |" in page
    assert "│ table │" in page and "Test CPU 9000" in page and "commit abc1234" in page
    assert "Not run yet on this commit: `python bench/suite.py --only send`" in page
    assert suite.headline("table\nratio = a description, not a result\n") == ""
