"""Installable as users install it: the repository's address is written once (stableaudio_jax.REPOSITORY) and every
badge, install cell and the package metadata derive from it; `python -m build` makes a wheel and an sdist that pass
`twine check --strict`, hold the package, its configs and the notebooks, and the wheel installs into a clean
virtual environment whose `stableaudio-jax --version` and installed configs work."""
import ast
import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import nbformat
import pytest

import stableaudio_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(n for n in os.listdir(os.path.join(ROOT, "notebooks")) if n.endswith(".ipynb"))
BADGE = re.compile(r"\[!\[[^\]]*\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]\(([^)\s]+)\)")
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/[^)\s\"']*")


def _notebook(name):
    return nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)


def _markdown_of(name):
    return "\n".join(c.source for c in _notebook(name).cells if c.cell_type == "markdown")


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


# ------------------------------------------------------------------------------------ one address, derived


def test_colab_url_is_built_from_the_repository(monkeypatch):
    assert stableaudio_jax.colab_url("quickstart.ipynb") == (
        "https://colab.research.google.com/github/"
        f"{stableaudio_jax.REPOSITORY.removeprefix('https://github.com/')}/blob/main/notebooks/quickstart.ipynb")
    assert stableaudio_jax.install_requirement(["tpu", "notebooks"]) == (
        f"stableaudio-jax[tpu,notebooks] @ git+{stableaudio_jax.REPOSITORY}")
    assert stableaudio_jax.install_requirement() == f"stableaudio-jax @ git+{stableaudio_jax.REPOSITORY}"
    for wrong in ("https://gitlab.com/a/b", "https://github.com/a/b.git", "https://github.com/a"):
        monkeypatch.setattr(stableaudio_jax, "REPOSITORY", wrong)
        with pytest.raises(ValueError, match="Colab opens notebooks from https://github.com/OWNER/NAME"):
            stableaudio_jax.colab_url("quickstart.ipynb")


def test_the_readme_has_one_badge_per_notebook_each_opening_it():
    badges = BADGE.findall(_readme())
    assert sorted(badges) == sorted(stableaudio_jax.colab_url(n) for n in NOTEBOOKS), badges
    # no other Colab link (the badge used to point at colab.research.google.com itself)
    others = [u for u in COLAB_LINK.findall(_readme()) if u not in badges and not u.endswith("colab-badge.svg")]
    assert not others, others


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_has_a_badge_opening_itself(name):
    text = _markdown_of(name)
    assert BADGE.findall(text) == [stableaudio_jax.colab_url(name)]
    assert os.path.isfile(os.path.join(ROOT, "notebooks", name))
    others = [u for u in COLAB_LINK.findall(text) if u != stableaudio_jax.colab_url(name)
              and not u.endswith("colab-badge.svg")]
    assert not others, others


def _install_cell(name):
    cells = [c for c in _notebook(name).cells if "install" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: expected one cell tagged 'install', found {len(cells)}"
    return ast.parse(cells[0].source)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cells_install_from_the_repository(name):
    """The install cell runs before the package can be imported, so it writes the address as a literal: it must be
    the package's REPOSITORY, and the requirement it builds must be install_requirement's."""
    tree = _install_cell(name)
    literals = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "REPOSITORY" for t in node.targets)]
    assert literals == [stableaudio_jax.REPOSITORY]
    source = ast.unparse(tree)
    assert "stableaudio-jax[{','.join(EXTRAS)}] @ git+{REPOSITORY}" in source
    assert "github.com" not in source.replace(stableaudio_jax.REPOSITORY, "")


def test_install_cells_detect_the_runtime_alike():
    """The detection is copied into each notebook (nothing can be imported before the install): the copies must
    not drift apart."""
    def functions(name):
        return {n.name: ast.dump(n) for n in _install_cell(name).body if isinstance(n, ast.FunctionDef)}
    first, *rest = [functions(n) for n in NOTEBOOKS]
    assert set(first) == {"preinstalled_jax", "nvidia_gpus", "detect_runtime"}
    assert all(f == first for f in rest)


def test_every_install_url_in_the_readme_is_the_repository():
    urls = re.findall(r"git\+(https://[^\s\"'@]+)", _readme())
    assert urls and set(urls) == {stableaudio_jax.REPOSITORY}


def test_setup_reads_the_package_constants_as_text():
    """setup.py runs before the package's requirements exist: it must not import the package."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m and m.split(".")[0] == "stableaudio_jax"]


# ------------------------------------------------------------------------------------ build, check, install


def _source_copy(target):
    """The files a checkout holds (tracked and untracked-but-not-ignored), without build outputs or caches."""
    if os.path.isdir(os.path.join(ROOT, ".git")):
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                                capture_output=True).stdout.decode().split("\0")
        for relative in filter(None, listed):
            source = os.path.join(ROOT, relative)
            if os.path.isfile(source):
                os.makedirs(os.path.dirname(os.path.join(target, relative)), exist_ok=True)
                shutil.copy2(source, os.path.join(target, relative))
    else:
        shutil.copytree(ROOT, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            "__pycache__", "*.egg-info", "build", "dist", ".venv", ".pytest_cache", "runs"))


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """``python -m build`` of a copy of the tree (the checkout is not written to): the sdist, then the wheel built
    from the sdist, as a release is made."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    _source_copy(source)
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, os.listdir(out)
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_twine_check_strict_passes(dists):
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]),
                             str(dists["sdist"])], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def _wheel_metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def test_metadata_names_the_repository_and_the_accelerator_extras(dists):
    meta = _wheel_metadata(dists["wheel"])
    assert meta["Version"] == stableaudio_jax.__version__
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Source"] == stableaudio_jax.REPOSITORY
    assert meta.get("Home-page", urls.get("Homepage")) == stableaudio_jax.REPOSITORY
    requires = meta.get_all("Requires-Dist")
    for extra, requirement in (("tpu", "jax[tpu]"), ("gpu", "jax[cuda12]")):
        found = [r for r in requires if r.startswith(requirement) and f'extra == "{extra}"' in r]
        assert len(found) == 1 and ">=" in found[0] and "==" not in found[0].split(";")[0], (extra, found)
    assert {"tpu", "gpu", "aot", "notebooks", "test"} <= set(meta.get_all("Provides-Extra"))
    # the long description is the README, its links to repository files made absolute
    body = meta.get_payload()
    assert "](docs/" not in body and f"]({stableaudio_jax.REPOSITORY}/blob/main/docs/sharding.md)" in body


def _package_files():
    found = set()
    for base, folder in (("stableaudio_jax", "stableaudio_jax"), ("stableaudio_jax/configs", "configs")):
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            relative = os.path.relpath(directory, os.path.join(ROOT, folder))
            found |= {os.path.normpath(os.path.join(base, relative, f)) for f in files if f.endswith(".py")}
    return found


def test_the_wheel_holds_every_module_the_configs_and_the_command(dists):
    with zipfile.ZipFile(dists["wheel"]) as z:
        names = set(z.namelist())
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    missing = _package_files() - names
    assert not missing, sorted(missing)
    assert re.search(r"^stableaudio-jax = stableaudio_jax\.cli:main$", entry_points, re.M)


def test_the_sdist_holds_the_package_configs_and_notebooks(dists):
    with tarfile.open(dists["sdist"]) as t:
        top = t.getnames()[0].split("/")[0]
        names = {n.removeprefix(top + "/") for n in t.getnames()}
    expected = {f for f in _package_files() if not f.startswith("stableaudio_jax/configs/")}
    expected |= {f"configs/{f}" for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")}
    expected |= {f"notebooks/{n}" for n in NOTEBOOKS} | {"setup.py", "README.md", "pytest.ini"}
    expected |= {f"launch/{f}" for f in os.listdir(os.path.join(ROOT, "launch"))
                 if os.path.isfile(os.path.join(ROOT, "launch", f)) and not f.endswith(".pyc")}
    missing = expected - names
    assert not missing, sorted(missing)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


@pytest.mark.slow
def test_the_wheel_installs_into_a_clean_venv(dists, tmp_path):
    """A new virtual environment, the wheel and its requirements from the package index (~1.6 GB), then the
    installed command, outside any checkout. ``--no-compile``: byte-compiling the 1.6 GB is a third of the install's
    time and nothing this test checks."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python, command = venv / "bin" / "python", venv / "bin" / "stableaudio-jax"
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", str(dists["wheel"])], capture_output=True,
                            text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")} | {"JAX_PLATFORMS": "cpu"}
    result = subprocess.run([str(command), "--version"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=120)
    assert result.returncode == 0 and result.stdout == f"stableaudio-jax {stableaudio_jax.__version__}\n", result
    # the package comes from the venv, not from this checkout, and its installed configs resolve by file name
    result = subprocess.run([str(command), "show-config", "vae.py:tiny", "--params"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parameters (vae): " in result.stdout
    where = subprocess.run([str(python), "-c", "import stableaudio_jax; print(stableaudio_jax.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120).stdout
    assert where.startswith(str(venv)), where
