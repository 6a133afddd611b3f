"""What the denoiser runs (``train``: ``diffusion_train.DiffusionRun``; ``train-arc``: ``arc_train.ARCRun``) share
in the trainer skeleton: pre-encoded latents (:class:`LatentSource`, with the data-hash check on resume), the
data record in the workdir, the batch layout, and the export as a text-to-audio model.
"""
from __future__ import annotations

from stableaudio_jax.training import diffusion_steps
from stableaudio_jax.training.export import export_model
from stableaudio_jax.training.init_from import check_data_text
from stableaudio_jax.training.latent_source import LatentSource
from stableaudio_jax.training.trainer import Run
from stableaudio_jax.training.workdirs import record_data


class LatentRun(Run):
    """A :class:`Run` on pre-encoded latents; a subclass compiles its steps into ``self.compiled`` (whose ``run`` is
    the model the export writes) and keeps its mesh in ``self.mesh``."""

    def open_data(self, data_dir, checkpointer):
        """The latents (a resume checks their hash against the checkpoint's), checked against the ``--init-from``
        model's text features, recorded in ``<workdir>/data.json``."""
        self.source = LatentSource.open(self.config, data_dir, checkpointer)
        if self.source.manifest is not None and self.config.training.get("init_from"):
            check_data_text(self.config, self.source.manifest, data_dir)
        record_data(self.workdir, data_dir, self.source.manifest, self.config)
        return self.source.data

    @property
    def manifest(self) -> dict | None:
        return self.source.manifest

    def batch_sharding(self):
        return diffusion_steps.batch_sharding(self.mesh)

    @property
    def audio_seconds_per_step(self) -> float:
        t = self.config.training
        return t.batch_size * t.crop_frames * self.source.seconds_per_frame

    def sampling(self) -> dict | None:
        """Generation defaults the export records other than the objective's (None: the objective's)."""
        return None

    def export(self, state, out):
        export_model(self.compiled.run, state, self.config, self.manifest, out, self.sampling())
