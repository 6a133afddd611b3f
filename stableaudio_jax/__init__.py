"""stableaudio-jax: Stable Audio latent diffusion (text-to-audio, text-to-music) in JAX/Flax.

Sub-packages: ``models`` (Linen modules), ``store`` (stored models: save/load every kind), ``convert``
(stable-audio-tools / diffusers checkpoints), ``parallel`` (meshes and sharding rules), ``inference`` (the
text-to-audio pipeline), ``training``, ``data``. Layers and conventions: docs/design.md. Importing this package
never imports torch or tensorflow.
"""
__version__ = "0.1.0"
# The one place the repository's address is written: setup.py's url / project_urls, the README's and notebooks'
# Colab badges, the notebooks' install cells and the launchers' default --package all derive from it (a fork
# changes this line). setup.py and launch/ read it as text, without importing the package.
REPOSITORY = "https://github.com/stableaudio-jax/stableaudio-jax"


def colab_url(notebook: str, branch: str = "main") -> str:
    """The address that opens ``notebooks/<notebook>`` of REPOSITORY (on ``branch``) in Colab: every Open-in-Colab
    badge is this (tests/test_packaging.py checks the README's and the notebooks')."""
    prefix = "https://github.com/"
    owner_name = REPOSITORY.removeprefix(prefix)
    if not REPOSITORY.startswith(prefix) or owner_name.count("/") != 1 or owner_name.endswith((".git", "/")):
        raise ValueError(f"REPOSITORY {REPOSITORY!r}: Colab opens notebooks from https://github.com/OWNER/NAME")
    return f"https://colab.research.google.com/github/{owner_name}/blob/{branch}/notebooks/{notebook}"


def install_requirement(extras: tuple[str, ...] | list[str] = ()) -> str:
    """What pip installs the package from: it is not on PyPI, so its repository (``stableaudio-jax[tpu,notebooks]
    @ git+https://github.com/...``). The notebooks' install cells write the same requirement (they run before the
    package can be imported; a test keeps the two equal)."""
    return f"stableaudio-jax{'[' + ','.join(extras) + ']' if extras else ''} @ git+{REPOSITORY}"
