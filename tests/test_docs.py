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


def test_readme_update_checks_the_root_before_writing(tmp_path: Path) -> None:
    """Run outside the repository, `python -m sparsexbar.app.readme out/demo` wrote
    docs/results/demo.json under the current folder and then failed with a traceback (no
    docs/img): the root and the run's folder are checked first, nothing is written."""
    from sparsexbar.app.readme import update_docs

    with pytest.raises(SparsexbarError, match="is not the repository's root .*README.md"):
        update_docs(tmp_path / "demo", tmp_path)
    (tmp_path / "README.md").write_text(f"a\n{BEGIN}\n{END}\n")
    (tmp_path / "docs" / "results").mkdir(parents=True)
    with pytest.raises(SparsexbarError, match="is not the repository's root .*img"):
        update_docs(tmp_path / "demo", tmp_path)
    (tmp_path / "docs" / "img").mkdir()
    with pytest.raises(SparsexbarError, match="holds no energy_by_component.png"):
        update_docs(tmp_path / "demo", tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["README.md", "docs", "img",
                                                           "results"]


def _script_output(script: str, *args: str) -> str:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / script), *args],
                          capture_output=True, text=True, check=True, cwd=root)
    return done.stdout.strip()


def test_benchmark_tables_are_the_scripts_output_on_the_committed_results() -> None:
    """docs/benchmarks.md's standing table and parts 12-15's tables are printed by their scripts
    from the committed result files (no figure typed by hand): the doc holds them verbatim."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    standing = _script_output("standing.py")
    assert standing.startswith("| target (issue 18) |") and standing.count("\n") >= 10
    assert standing in doc, "docs/benchmarks.md's standing table is stale: run standing.py"
    floor = _script_output("linear_floor.py", "--table",
                           "docs/results/bench/linear_floor12.json")
    assert "| comprrae |" in floor and floor in doc
    products = _script_output("batched_products.py", "--table",
                              "docs/results/bench/batched_products13.json")
    assert "| 15610 |" in products and products in doc
    b = "docs/results/bench/"
    for part, before, cases, tails in (
            (13, "9c6dcb4", ("nonideal",), ("", "_2")),
            (14, "2d7acd2", ("nonideal", "variation"), ("", "_2", "_3", "_4"))):
        runs = [f"pair {i}, {label}={b}noisy_{side}_t1{tail}.json,{b}noisy_{side}_t2{tail}.json"
                for i, tail in enumerate(tails, start=1)
                for side, label in ((f"before{part}", f"before ({before})"),
                                    (f"after{part}", "after"))]
        for key in cases:
            noisy = _script_output("threads_pairs.py", "--case", key, *runs)
            assert noisy.count("| pair ") == 2 * len(tails) and noisy in doc, (part, key)
    early = [f"pair {i}, {label}={b}noisy_{side}_t1{tail}.json,{b}noisy_{side}_t2{tail}.json"
             for i, tail in ((1, ""), (2, "_2"))
             for side, label in (("before14a", "before (2d7acd2)"),
                                 ("after14a", "after (1fc5284)"))]
    noisy = _script_output("threads_pairs.py", "--case", "nonideal", *early)
    assert noisy.count("| pair ") == 4 and noisy in doc, "part 14, earlier window"
    window15 = [f"pair {i}={b}noisy_after15_t1{tail}.json,{b}noisy_after15_t2{tail}.json"
                for i, tail in ((1, ""), (2, "_2"), (3, "_3"))]
    noisy = _script_output("threads_pairs.py", "--case", "nonideal", *window15)
    assert noisy.count("| pair ") == 3 and noisy in doc, "part 15, two threads"
    head = _script_output("noisy_head.py", "--table", f"{b}noisy_head14.json")
    assert "| 2048 x 256 |" in head and head in doc
