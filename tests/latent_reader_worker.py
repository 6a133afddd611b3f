"""One host of tests/test_latent_reader.py's two-process test: joins a jax.distributed run, reads one epoch of each
dataset directory with its own process index, writes the (source_id, window_index) pairs it saw as JSON.
Run as: python latent_reader_worker.py ID COUNT PORT OUT DIR [DIR...]."""
import json
import os
import sys

process_id, count, port, out, directories = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                             sys.argv[5:])
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

from stableaudio_jax.data.latent_reader import latent_dataset  # noqa: E402

jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=count, process_id=process_id,
                           initialization_timeout=120)
assert jax.process_count() == count and jax.process_index() == process_id and jax.local_device_count() == 4
seen = {}
for directory in directories:
    ds = latent_dataset(directory, batch_size=2, crop_frames=4, seed=3, process_index=jax.process_index(),
                        process_count=jax.process_count(), num_epochs=1, drop_remainder=False, with_metadata=True)
    seen[directory] = [[str(s), int(w)] for batch in ds for s, w in zip(batch["source_id"], batch["window_index"])]
with open(out, "w", encoding="utf-8") as f:
    json.dump({"process_index": jax.process_index(), "seen": seen}, f)
jax.distributed.shutdown()
print("done", process_id)
