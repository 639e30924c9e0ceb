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


def test_the_job_runtime_env_carries_the_dependencies_the_cluster_image_lacks():
    """deploy/runtime_env.yaml (the README's `ray job submit` recipe) installs every dependency
    of pyproject.toml but those the cluster's image provides (Ray, torch, torchvision), and Ray
    accepts it."""
    import tomllib
    import yaml
    from ray.runtime_env import RuntimeEnv

    environment = yaml.safe_load((REPO / "deploy" / "runtime_env.yaml").read_text())
    RuntimeEnv(**environment)  # Ray's own validation of the fields
    pinned = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    provided = ("torch==", "torchvision==", "ray[")
    assert environment["pip"]["packages"] == [d for d in pinned if not d.startswith(provided)]
    assert environment["working_dir"] == "."
    readme = (REPO / "README.md").read_text()
    assert "--runtime-env deploy/runtime_env.yaml" in readme
