"""The reference DAC encoder/decoder (``descript-audio-codec``, what stable-audio-tools wraps for Stable Audio 1.0's
VAE) without torchaudio: DAC imports ``audiotools`` (which needs torchaudio, a CUDA build here) only for its codec
and training utilities, never for ``Encoder`` / ``Decoder``. Stand-in ``audiotools`` modules let it import.
Installed with ``pip install --no-deps descript-audio-codec==1.0.0 descript-audiotools argbind`` (README)."""
import sys
import types


def _stand_in_modules():
    import torch

    class StandIn(torch.nn.Module):
        INTERN: list = []
        EXTERN: list = []

    def module(name):
        mod = types.ModuleType(name)
        def stand_in(attr):  # AudioSignal, STFTParams, BaseModel, util functions...; never module metadata
            if attr.startswith("__"):
                raise AttributeError(attr)
            return StandIn
        mod.__getattr__ = stand_in
        mod.__path__ = []
        return mod

    names = ["audiotools", "audiotools.ml", "audiotools.core", "audiotools.core.util", "audiotools.data"]
    mods = {name: module(name) for name in names}
    mods["audiotools"].ml = mods["audiotools.ml"]
    mods["audiotools"].core = mods["audiotools.core"]
    mods["audiotools.ml"].BaseModel = StandIn
    return mods


def dac_model():
    """``dac.model.dac`` (Encoder, Decoder)."""
    if "dac.model.dac" not in sys.modules:
        for name, mod in _stand_in_modules().items():
            sys.modules.setdefault(name, mod)
    import dac.model.dac
    return dac.model.dac
