"""The generated docs are current (config reference, ISAAC table, README demo block), and the
README names the two commands."""

from pathlib import Path

import pytest

from sparsexbar.app.readme import BEGIN, END, demo_markdown, load_demo, replace_block
from sparsexbar.core.config import reference_markdown
from sparsexbar.core.errors import SparsexbarError
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


def test_readme_demo_block_comes_from_the_stored_demo_results() -> None:
    """The README's demo table is what `demo_markdown` makes of docs/results/demo.json (a
    `sparsexbar demo` run's summaries, stored by `python -m sparsexbar.app.readme`), and that
    run covered the whole 10,000-image test split, dense first."""
    results = load_demo(ROOT / "docs" / "results" / "demo.json")
    assert results[0]["scheme"]["name"] == "dense" and results[0]["num_images"] == 10_000
    assert {r["num_images"] for r in results} == {10_000}
    readme = (ROOT / "README.md").read_text()
    assert replace_block(readme, demo_markdown(results)) == readme
    assert (ROOT / "docs" / "img" / "demo_energy_by_component.png").stat().st_size > 10_000


def test_readme_block_replacement_needs_its_markers() -> None:
    text = f"a\n{BEGIN}\nold\n{END}\nb\n"
    assert replace_block(text, "new\n") == f"a\n{BEGIN}\nnew\n{END}\nb\n"
    with pytest.raises(SparsexbarError, match="block"):
        replace_block("no markers", "x")
