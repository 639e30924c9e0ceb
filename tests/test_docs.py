"""The docs match the code: the README stays a front door, every link and every `python -m smsweep`
command in the docs works, the spec reference is generated and names what the registries hold,
and CI runs the README's command."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from smsweep.cli import build_parser
from smsweep.spec.reference import reference_markdown

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_MAX_LINES = 250
# Placeholders of the docs' command synopses, and real values that stand in for them.
PLACEHOLDERS = {
    "SPEC": "sweeps/quickstart.yaml",
    "DIR": "smsweep_runs/quickstart",
    "N": "quickstart",
    "URI": "sqlite:///mlflow.db",
    "ADDR": "auto",
    "KEY=VALUE": "seed=1",
}


def pages() -> list[Path]:
    """README.md and the docs' pages (docs/*.md, not the folders below docs/)."""
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def _outside_fences(text: str) -> str:
    """The text with every fenced code block blanked out (a `#` in a YAML block is no heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _fences(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", _outside_fences(page.read_text()), flags=re.M)
    return {slug(heading) for heading in headings}


def test_readme_is_a_front_door_with_the_docs_behind_it():
    readme = (REPO / "README.md").read_text()
    lines = len(readme.splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move a subject to docs/"
    )
    index = (DOCS / "README.md").read_text()
    assert "](docs/README.md)" in readme, "the README must link the docs index"
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not list {page.name}"
            assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def test_every_relative_link_in_the_docs_resolves():
    """Files exist, and an anchor (`page.md#section`) names a heading of that page."""
    broken = []
    for page in pages():
        text = _outside_fences(page.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO)}: {target}"
            if not linked.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
                broken.append(f"{where} (no heading #{anchor} there)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n## Its section\n\n```yaml\n# not a heading\n```\n")
    assert anchors(page) == {"a-page", "its-section"}
    assert slug("Seeds and controls: is the best configuration really better?") == (
        "seeds-and-controls-is-the-best-configuration-really-better"
    )


def test_spec_reference_is_current():
    text = (DOCS / "spec-reference.md").read_text()
    start = text.index("-->", text.index("<!-- spec-reference:start")) + 3
    end = text.index("<!-- spec-reference:end -->")
    assert text[start:end].strip() == reference_markdown().strip(), (
        "docs/spec-reference.md is stale: paste the output of `python -m smsweep.spec.reference` "
        "between its markers"
    )


def _legal_values(reference: str, key: str) -> set[str]:
    row = re.search(rf"^\| `{re.escape(key)}` \|[^|]*\|([^|]*)\|", reference, flags=re.M)
    assert row, f"the spec reference has no row for {key}"
    return set(re.findall(r"`([^`]+)`", row.group(1)))


def test_spec_reference_names_what_the_registries_hold():
    """The schema's literals (what the reference lists) and the registries that build the objects
    (the YAML boundary) name the same strategies, data sources, fills and robustness factors."""
    from smsweep.method.data import SOURCES
    from smsweep.method.masking import FILLS, STRATEGIES
    from smsweep.method.robustness import SHIFTS

    reference = (DOCS / "spec-reference.md").read_text()
    registries = {
        "masking.strategy": STRATEGIES,
        "data.source": SOURCES,
        "masking.fill": FILLS,
        "robustness.factors": SHIFTS,
    }
    for key, registry in registries.items():
        assert _legal_values(reference, key) == set(registry), key


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


def smsweep_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `python -m smsweep ...` in a bash fence of README.md or docs/*.md,
    its synopsis brackets, alternatives and placeholders replaced by real values."""
    found = []
    for page in pages():
        for fence in _fences(page.read_text(), "bash"):
            for line in fence.replace("\\\n", " ").splitlines():
                tokens = shlex.split(line, comments=True)
                while tokens:
                    end = tokens.index("&&") if "&&" in tokens else len(tokens)
                    segment, tokens = tokens[:end], tokens[end + 1 :]
                    for start in range(len(segment) - 2):
                        if segment[start : start + 3] == ["python", "-m", "smsweep"]:
                            argv = _real_values(segment[start + 3 :])
                            found.append((f"{page.relative_to(REPO)}: {line.strip()}", argv))
    return found


def _real_values(synopsis: list[str]) -> list[str]:
    argv = []
    for token in synopsis:
        token = token.strip("[]")
        if token in ("", "..."):
            continue
        if "|" in token:  # `shapes|textures`, `DIR|s3://BUCKET/PREFIX`: the first
            token = token.split("|")[0]
        argv.append(PLACEHOLDERS.get(token, token))
    return argv


def _help(path: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*path, "--help"])
    return out.getvalue()


def test_every_command_in_the_docs_parses():
    """Every command shown parses with the CLI's own parser (nothing runs): the subcommand and each
    flag exist as written (not as an abbreviation argparse would accept), and the spec files named
    by `run` and `validate` exist."""
    commands = smsweep_commands()
    shown = {argv[0] for _, argv in commands if argv}
    assert {"run", "resume", "validate", "report", "bench", "data"} <= shown, shown
    for where, argv in commands:
        try:
            parsed = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}\n  does not parse as python -m smsweep {shlex.join(argv)}")
        path: list[str] = []
        for token in argv:  # the subcommand chain, e.g. `data synth`
            if token.startswith("-") or not re.search(
                rf"{{[^}}]*\b{re.escape(token)}\b", _help(path)
            ):
                break
            path.append(token)
        usage = _help(path)
        for token in argv:
            flag = token.split("=")[0]
            if flag.startswith("--"):
                assert re.search(rf"(?<![\w-]){flag}(?![\w-])", usage), f"{where}: {flag}"
        if parsed.command in ("run", "validate"):
            assert (REPO / parsed.spec).is_file(), f"{where}: no spec file {parsed.spec}"


def test_the_command_extraction_replaces_placeholders():
    assert _real_values(["run", "SPEC", "[--storage", "DIR|s3://BUCKET/PREFIX]", "..."]) == [
        "run",
        "sweeps/quickstart.yaml",
        "--storage",
        "smsweep_runs/quickstart",
    ]
    with pytest.raises(SystemExit):  # a flag that does not exist fails the parse
        build_parser().parse_args(["run", "sweeps/quickstart.yaml", "--no-such-flag"])


def test_the_job_runtime_env_carries_the_dependencies_the_cluster_image_lacks():
    """deploy/runtime_env.yaml (the `ray job submit` recipe of docs/clusters.md) installs every
    dependency of pyproject.toml but those the cluster's image provides (Ray, torch,
    torchvision), and Ray accepts it."""
    import tomllib
    import yaml
    from ray.runtime_env import RuntimeEnv

    environment = yaml.safe_load((REPO / "deploy" / "runtime_env.yaml").read_text())
    RuntimeEnv(**environment)  # Ray's own validation of the fields
    pinned = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    provided = ("torch==", "torchvision==", "ray[")
    assert environment["pip"]["packages"] == [d for d in pinned if not d.startswith(provided)]
    assert environment["working_dir"] == "."
    clusters = (DOCS / "clusters.md").read_text()
    assert "--runtime-env deploy/runtime_env.yaml" in clusters
