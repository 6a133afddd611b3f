"""The suite's own rules: a test file imports shared code from ``tests/helpers.py`` (or a package), never from
another test file, so that any file runs alone and a fixture has one home."""
import ast
from pathlib import Path

TESTS = Path(__file__).parent


def _test_file_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"{path.name}:{node.lineno} imports {n}" for n in names
                  if n.split(".")[-1].startswith("test_") or n.startswith("tests.test_")]
    return found


def test_test_files_import_no_other_test_file():
    offenders = [hit for path in sorted(TESTS.glob("*.py")) for hit in _test_file_imports(path)]
    assert not offenders, "move what they share into tests/helpers.py: " + "; ".join(offenders)


def test_the_check_sees_an_import_of_a_test_file(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("def f():\n    from test_vae_training import x\n")
    assert _test_file_imports(bad) == ["test_bad.py:2 imports test_vae_training"]
