"""A training process for tests/test_multihost.py: tiny VAE steps on a fixed global batch, each process feeding its
own rows; process 0 writes the resulting parameters. Run as: python multihost_worker.py ID COUNT PORT OUT STEPS."""
import os
import sys

process_id, count, port, out, steps = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={8 // count} "
                           + os.environ.get("STABLEAUDIO_TESTS_XLA_FLAGS", ""))  # tests/conftest.py's compile flags
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from stableaudio_jax.config_loader import load_config  # noqa: E402
from stableaudio_jax.parallel.distributed import global_batch, host_slice, initialize  # noqa: E402
from stableaudio_jax.parallel.mesh import make_mesh  # noqa: E402
from stableaudio_jax.training import vae_steps  # noqa: E402

if count > 1:
    initialize(dict(coordinator_address=f"127.0.0.1:{port}", num_processes=count, process_id=process_id,
                    initialization_timeout=120))
assert jax.device_count() == 8 and jax.process_count() == count
config = load_config("configs/vae.py:tiny", [
    "mesh.data=2", "mesh.fsdp=4", "training.spectral.fft_sizes=(256,)", "training.spectral.hop_sizes=(64,)",
    "training.discriminator.n_ffts=(128,)", "training.discriminator.hops=(32,)"])
mesh = make_mesh(config.mesh)
compiled = vae_steps.compiled(config, mesh)
state = compiled.init(jax.random.key(0))
audio = (0.3 * np.random.default_rng(0).standard_normal((steps, 8, 2048, 2))).astype(np.float32)
rows = host_slice(8)  # this process's rows of every global batch
for step in range(steps):
    batch = global_batch(audio[step, rows], vae_steps.batch_sharding(mesh))
    state, _ = compiled.step_for(step)(state, batch)
initial = multihost_utils.process_allgather(compiled.init(jax.random.key(0)).gen_params, tiled=True)
params = multihost_utils.process_allgather({"gen": state.gen_params, "disc": state.disc_params}, tiled=True)
if process_id == 0:
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    moved = sum(float(np.abs(np.asarray(a) - np.asarray(b)).sum()) for a, b in
                zip(jax.tree_util.tree_leaves(params["gen"]), jax.tree_util.tree_leaves(initial)))
    np.savez(out, moved=np.float32(moved), **flat)
print("done", process_id)
