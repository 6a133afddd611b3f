"""Text-to-audio inference: :class:`TextToAudioPipeline` (``stableaudio_jax.inference.TextToAudioPipeline``)."""


def __getattr__(name: str):
    # lazy: importing a sibling module (generation_inputs, progress) does not load the whole pipeline
    if name == "TextToAudioPipeline":
        from stableaudio_jax.inference.pipeline import TextToAudioPipeline
        return TextToAudioPipeline
    raise AttributeError(f"module 'stableaudio_jax.inference' has no attribute {name!r}")
