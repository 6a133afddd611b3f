"""The installed package: imports without torch/tensorflow, and the console script works."""
import os
import subprocess
import sys

import pytest

BLOCK_AND_IMPORT_ALL = r"""
import importlib, importlib.abc, pkgutil, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorflow', 'diffusers', 'transformers'):
            raise ImportError(f'{name} is blocked: stableaudio_jax must not need it')

sys.meta_path.insert(0, Block())
import stableaudio_jax
names = [m.name for m in pkgutil.walk_packages(stableaudio_jax.__path__, 'stableaudio_jax.')]
for name in names:
    importlib.import_module(name)
assert not any(m.split('.')[0] in ('torch', 'tensorflow') for m in sys.modules)
print(len(names), 'modules imported')
"""


def _run(args, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, **kw)


def test_import_without_torch():
    result = _run([sys.executable, "-c", BLOCK_AND_IMPORT_ALL])
    assert result.returncode == 0, result.stderr
    assert "modules imported" in result.stdout


@pytest.fixture(scope="module")
def cli():
    exe = os.path.join(os.path.dirname(sys.executable), "stableaudio-jax")
    assert os.path.exists(exe), "the stableaudio-jax console script is not installed (pip install -e .)"
    return exe


def test_cli_help(cli):
    result = _run([cli, "--help"])
    assert result.returncode == 0 and "show-config" in result.stdout


def test_cli_show_config_counts_sao_parameters(cli, tmp_path):
    result = _run([cli, "show-config", "vae.py:sao", "--params", "--config.model.remat=true"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "parameters (vae): 156,112,514" in result.stdout and '"remat": true' in result.stdout


def test_cli_bad_override_exits_2_with_the_key(cli):
    result = _run([cli, "show-config", "configs/vae.py:tiny", "--config.model.chanels=3"])
    assert result.returncode == 2 and "unknown key config.model.chanels" in result.stderr


VERSION_WITHOUT_JAX = r"""
import sys
from stableaudio_jax.cli import main
assert main(["--version"]) == 0
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'numpy', 'tensorflow'))
assert not heavy, heavy
"""


def test_cli_version_answers_without_importing_jax(cli):
    import stableaudio_jax
    result = _run([cli, "--version"])
    assert result.returncode == 0 and result.stdout == f"stableaudio-jax {stableaudio_jax.__version__}\n", result
    # the installed-package check CI and users run must be instant: no jax, flax or numpy behind it
    result = _run([sys.executable, "-c", VERSION_WITHOUT_JAX])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"stableaudio-jax {stableaudio_jax.__version__}\n"
    assert "--version" in _run([cli, "--help"]).stdout
