"""Every figure in a results table of README.md or docs/ comes from a file: the table's section names a JSON under
docs/results/ (and the benchmarks/ script that wrote it), and each number in the table's figure cells is one of
that JSON's numbers at the precision shown (in the unit shown: s/ms, bytes/GB/GiB, fraction/percent)."""
import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULT_NAME = re.compile(r"[\w./-]+\.jsonl?\b")
# what writes a results file: a script in benchmarks/, the package's own `bench` command, or a rendered plan block
SCRIPT_NAME = re.compile(r"benchmarks/[\w-]+\.(?:py|sh)\b|stableaudio-jax bench \w+|<!-- plan:")
PLAN_MARKER = re.compile(r"<!-- plan:([\w.-]+) -->")
PLAN_RUN = re.compile(r"sharding_plans\.sh((?:\s+[\w{},.-]+)+)")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
NUMBER = r"[−+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[−+-]?\d+)?"
UNIT = r"(?:x|×|%|s|ms|µs|min|GB|GiB|MB|MiB|TB|dB|TFLOP/s|M|k)?"
# a figure cell: numbers with optional units and nothing else but bold marks, spaces and the separators of
# "a / b", "median (min–max)" and "a, b" (a cell with words in it is a description, not a figure)
FIGURE_CELL = re.compile(rf"^(?:{NUMBER}\s*{UNIT}(?![\w])|\)\s*{UNIT}(?![\w])|[\s*/(),–±])+$")
# unit changes a page may make from the stored value (value in the JSON times the factor = the figure shown)
FACTORS = (1, 100, 1e3, 1e-3, 1e6, 1e-6, 1e-9, 1e-12, 2.0 ** -30, 2.0 ** -20, 1 / 60)


# regions benchmarks/sharding_report.py renders from the plans' JSON: checked whole, against its output
RENDERED = re.compile(r"(<!-- (plan:[\w.-]+|finetune-memory) -->\n).*?(<!-- /\2 -->)", re.S)


def tables(page: Path):
    """(section text before the table, header cells, body rows) for every markdown table of a page, outside the
    regions sharding_report.py renders."""
    section, rows, found = [], [], []
    text = RENDERED.sub(lambda m: m.group(1) + m.group(3), page.read_text(encoding="utf-8"))
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if rows:
            found.append(("\n".join(section), rows[0], [r for r in rows[2:]]))
            section.extend("|".join(r) for r in rows)
            rows = []
        section = [] if line.startswith("#") else section + [line]
    return found


def figures(row: list[str]) -> list[str]:
    row = [re.sub(r"(?<=\d)-(?=\d)", "–", cell) for cell in row]  # "2.90-4.50" is a range, not a minus
    return [n for cell in row if re.search(r"\d", cell) and not DATE.search(cell) and FIGURE_CELL.match(cell)
            for n in re.findall(NUMBER, cell)]


def json_numbers(path: Path) -> list[float]:
    text = path.read_text(encoding="utf-8")
    docs = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else [
        json.loads(text)]
    found = []

    def walk(x):
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)) and math.isfinite(x):
            found.append(float(x))
        elif isinstance(x, dict):
            [walk(v) for v in x.values()]
        elif isinstance(x, list):
            [walk(v) for v in x]
    [walk(d) for d in docs]
    return found


def shown_matches(shown: str, values: list[float]) -> bool:
    """True when some stored value, in some unit, rounds to the figure as written (its decimals or digits)."""
    text = shown.replace("−", "-").replace(",", "")
    target = float(text)
    mantissa = text.split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(text.split("e")[1]) if "e" in text else 0
    step = 10.0 ** (exponent - decimals)
    for value in values:
        for factor in FACTORS:
            if abs(value * factor - target) <= 0.5 * step * (1 + 1e-9) + 1e-12 * abs(target):
                return True
    return False


def expand_braces(word: str) -> list[str]:
    """Shell brace expansion, as the docs write plan names: ``a_{x,y}_b`` → ``a_x_b``, ``a_y_b``."""
    match = re.search(r"\{([^{}]*)\}", word)
    if not match:
        return [word]
    return [w for part in match.group(1).split(",")
            for w in expand_braces(word[:match.start()] + part + word[match.end():])]


def sources(section: str) -> list[Path]:
    """The result files a table's section names: a plan block (``<!-- plan:NAME -->``, rendered by
    benchmarks/sharding_report.py) is its own plan's JSON only; otherwise every JSON named, and the plans named
    after ``sharding_plans.sh``."""
    results = ROOT / "docs" / "results"
    plans = PLAN_MARKER.findall(section)
    if plans:
        return [results / "sharding" / f"{plans[-1]}.jsonl"]
    names = RESULT_NAME.findall(section) + [f"{plan}.jsonl" for run in PLAN_RUN.findall(section)
                                            for word in run.split() for plan in expand_braces(word)]
    found = []
    for name in names:
        for candidate in (ROOT / name, results / name, results / "sharding" / name):
            if candidate.is_file() and candidate.is_relative_to(results):
                found.append(candidate)
                break
    return list(dict.fromkeys(found))  # each file once, however often the section names it


def unsourced(page: Path) -> list[str]:
    problems = []
    for section, header, body in tables(page):
        rows = [r for r in body if figures(r)]
        if not rows:
            continue
        where = f"{page.relative_to(ROOT)} table '{' | '.join(header)[:60]}'"
        files = sources(section + "\n" + "\n".join("|".join(r) for r in body))
        if not files:
            problems.append(f"{where}: names no JSON under docs/results/")
            continue
        if not SCRIPT_NAME.search(section):
            problems.append(f"{where}: names no benchmarks/ script that writes {files[0].name}")
        values = [v for f in files for v in json_numbers(f)]
        problems += [f"{where}: {n} is in none of {[f.name for f in files]}"
                     for r in rows for n in figures(r) if not shown_matches(n, values)]
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_figure_in_a_results_table_is_in_its_json(page):
    problems = unsourced(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [p for p in PAGES if RENDERED.search(p.read_text(encoding="utf-8"))],
                         ids=lambda p: p.name)
def test_rendered_plan_tables_are_what_the_report_script_writes_from_their_json(page, monkeypatch):
    """Every ``<!-- plan:NAME -->`` / ``<!-- finetune-memory -->`` region is exactly what
    ``benchmarks/sharding_report.py`` renders from docs/results/sharding/ (derived columns included)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("sharding_report", ROOT / "benchmarks" / "sharding_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    monkeypatch.setattr(report, "length_plot", lambda rows, path: None)  # a test writes no file into docs/
    text = page.read_text(encoding="utf-8")
    rendered = report.render(str(page), str(ROOT / "docs" / "results" / "sharding"))
    stale = [m.group(2) for m, r in zip(RENDERED.finditer(text), RENDERED.finditer(rendered)) if m.group(0) != r.group(0)]
    assert not stale, f"{page.name}: regions not as rendered from their JSON (run benchmarks/sharding_report.py): {stale}"


def test_the_check_reads_figure_cells_and_catches_a_figure_no_json_holds(tmp_path, monkeypatch):
    assert figures(["2.79 (2.08-3.51)x", "−2.85"]) == ["2.79", "2.08", "3.51", "−2.85"]
    assert figures(["1.839 (1.783–1.895)", "**0.94**", "0.25 / 0.25", "2-core CPU", "batch 8", "—"]) == [
        "1.839", "1.783", "1.895", "0.94", "0.25", "0.25"]
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    (results / "r.json").write_text(json.dumps({"seconds": 0.0123, "ratio": 1.0449, "bytes": 19.31e9}))
    page = tmp_path / "docs" / "page.md"
    page.write_text("## A\n\nFrom `docs/results/r.json` (`benchmarks/r.py`).\n\n| run | ms | ratio | GB |\n|---|---|---|---|\n"
                    "| r.json | 12.3 | 1.04x | 19.31 |\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert unsourced(page) == []
    page.write_text(page.read_text().replace("1.04x", "1.05x"))
    assert unsourced(page) == ["docs/page.md table 'run | ms | ratio | GB': 1.05 is in none of ['r.json']"]
    page.write_text(page.read_text().replace("From `docs/results/r.json` (`benchmarks/r.py`).", "Measured once."))
    assert unsourced(page)[0] == ("docs/page.md table 'run | ms | ratio | GB': names no benchmarks/ script that "
                                  "writes r.json")
