"""The generated config reference is current, and the README names the two commands."""

from pathlib import Path

from sparsexbar.core.config import reference_markdown
from sparsexbar.studies.isaac_check import comparison_markdown, isaac_comparison, with_table

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == reference_markdown()


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_cost_page_isaac_table_is_current() -> None:
    doc = (ROOT / "docs" / "cost.md").read_text()
    assert with_table(doc, comparison_markdown(isaac_comparison())) == doc
    assert (ROOT / "docs" / "img" / "adc_model.png").stat().st_size > 10_000
