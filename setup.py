"""stableaudio-jax: Stable Audio (latent audio diffusion) in JAX/Flax."""
import ast
import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def _package_constant(name: str) -> str:
    """``name`` as assigned in stableaudio_jax/__init__.py, read as text: building the package must not import it
    (its dependencies are not installed yet). The version and the repository's address are written there once."""
    tree = ast.parse((HERE / "stableaudio_jax" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"stableaudio_jax/__init__.py assigns no {name}")


VERSION = _package_constant("__version__")
REPOSITORY = _package_constant("REPOSITORY")


def _long_description() -> str:
    """The README, with its links to files of the repository made absolute: on a package index page a relative
    link (docs/sharding.md) points nowhere."""
    text = (HERE / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\]\((?!https?://|#)([^)\s]+)\)", lambda m: f"]({REPOSITORY}/blob/main/{m.group(1)})", text)

INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "ml-collections>=1.1.0",
    "tensorflow-datasets>=4.9.10",
    "sentencepiece>=0.2.0",
    "librosa>=0.11.0",
    "soundfile>=0.13.0",
    "safetensors>=0.5.0",
    "numpy>=1.26",
    "tqdm>=4.66",
    "grain>=0.2.12",  # per-host audio crop pipelines with checkpointable iterators
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "pillow>=10.0",  # spectrogram PNGs in the CLI and training summaries
    "google-crc32c>=1.5",  # TFRecord checksums (masked CRC32C), written and verified without TensorFlow
    # gs:// paths for every command (stableaudio_jax/paths.py via fsspec; orbax's epath uses the same gcsfs)
    "gcsfs>=2024.2.0",
    "huggingface_hub>=0.24",  # `convert --from hf:REPO`, TextToAudioPipeline.from_pretrained (token, cache, revision)
    "tokenizers>=0.15",  # CLAP's RoBERTa byte-level BPE (Stable Audio 1.0 / 2.0 text conditioning)
    # the offline demo data set (`demo-data`, `quickstart`): scores, a General MIDI soundfont and a synthesiser
    "music21>=9.1",
    "pretty_midi>=0.2.10",  # ships TimGM6mb.sf2
    "midirenderer>=0.1.3",
]

# what the notebooks use beyond the package (Colab has them): plots and the audio players
NOTEBOOK_REQUIRES = ["matplotlib>=3.7", "ipython>=8.0"]
# JAX for the accelerator that runs the models (jax's own extras: libtpu; the CUDA 12 plugin with its CUDA
# libraries). Lower bounds, not pins: Colab and TPU VM images move, and jax's extra picks the matching plugin.
TPU_REQUIRES = ["jax[tpu]>=0.10.2"]
GPU_REQUIRES = ["jax[cuda12]>=0.10.2"]
# Ahead-of-time compilation for hardware this machine does not have (`bench sharding --target tpu:... / gpu:...`):
# the TPU compiler (libtpu, at the version jax's own `tpu` extra names) and the CUDA PJRT plugin. Heavy (~1.8 GB),
# never in the base install; neither needs the hardware or a driver.
AOT_REQUIRES = ["jax[tpu]>=0.10.2", "jax-cuda12-plugin>=0.10.2"]

TEST_REQUIRES = [
    "pytest>=8.0",
    "pytest-timeout>=2.2",  # a hung test fails with every thread's stack (pytest.ini) instead of stalling CI
    "pytest-xdist>=3.5",  # the suite runs on every core (pytest.ini), whole files per worker
    "filelock>=3.12",  # workers share one tiny world (tests/conftest.py)
    # The PyTorch reference for parity tests. Pinned: on the project machines `torch==2.13.0` is a local CPU
    # wheel, any other version pulls CUDA. Never add torchaudio/torchvision (they break diffusers' Stable Audio).
    "torch==2.13.0",
    "diffusers>=0.32.0",
    "transformers>=4.46.0",
    "auraloss>=0.4.0",  # the reference's spectral losses, for parity of ours
    "gcp-storage-emulator>=2024.1.0",  # a local Cloud Storage server: gs:// paths are tested without the cloud
    # what the reference DAC encoder/decoder (descript-audio-codec, Stable Audio 1.0's VAE) imports; the package
    # itself is installed with --no-deps (README): its own requirements pull torchaudio, a CUDA build here
    "einops>=0.7",
    "argbind>=0.3.7",
    # the notebooks run top to bottom in the suite, on a real kernel
    "nbclient>=0.10",
    "nbformat>=5.10",
    "ipykernel>=6.29",
    *NOTEBOOK_REQUIRES,
    # tests/test_packaging.py: the wheel and sdist users install are built, checked as an index would check them,
    # and the wheel installed into a clean virtual environment
    "build>=1.2",
    "twine>=5.1",
]

setup(
    name="stableaudio-jax",
    version=VERSION,
    description="Stable Audio latent diffusion (text-to-audio) in JAX/Flax for TPU pods and GPU clusters",
    long_description=_long_description(),
    long_description_content_type="text/markdown",
    url=REPOSITORY,
    project_urls={"Source": REPOSITORY, "Issues": f"{REPOSITORY}/issues",
                  "Notebooks": f"{REPOSITORY}/tree/main/notebooks"},
    python_requires=">=3.11",
    # configs/ lives at the top level (the user's layout); it is also installed as stableaudio_jax.configs so
    # `--config vae.py:sao` resolves without a source checkout.
    packages=find_packages(include=["stableaudio_jax", "stableaudio_jax.*"]) + ["stableaudio_jax.configs"],
    package_dir={"stableaudio_jax.configs": "configs"},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "notebooks": NOTEBOOK_REQUIRES, "aot": AOT_REQUIRES,
                    "tpu": TPU_REQUIRES, "gpu": GPU_REQUIRES},
    entry_points={"console_scripts": ["stableaudio-jax = stableaudio_jax.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
