"""The generated config reference is current, and the README names the two commands."""

from pathlib import Path

from sparsexbar.core.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == reference_markdown()


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
