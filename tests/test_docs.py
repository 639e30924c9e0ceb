"""The docs match the code: the spec reference is generated, and CI runs the README's command."""

from __future__ import annotations

import re
from pathlib import Path

from smsweep.specdoc import reference_markdown

REPO = Path(__file__).resolve().parents[1]


def test_readme_spec_reference_is_current():
    readme = (REPO / "README.md").read_text()
    start = readme.index("-->", readme.index("<!-- spec-reference:start")) + 3
    end = readme.index("<!-- spec-reference:end -->")
    assert readme[start:end].strip() == reference_markdown().strip(), (
        "README's spec reference is stale: paste the output of `python -m smsweep.specdoc`"
    )


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    fence = re.search(r"Install and run the tests:\s*```bash\n(.+?)\n```", readme, re.S)
    assert fence, "README must show the test command"
    command = fence.group(1).strip()
    install, _, test = command.rpartition(" && ")
    assert test == "python -m pytest"
    assert "pip install -e '.[dev]'" in install and "pip install --quiet -e '.[dev]'" in ci
    assert ci.rstrip().endswith(test)
