"""configs/*.py loading, variants and --config.a.b=value overrides."""
import pytest

from stableaudio_jax.config_loader import apply_overrides, load_config, resolve_config_path, split_override_args


def test_variants():
    sao = load_config("configs/vae.py:sao")
    assert sao.model.channels == 128 and tuple(sao.model.c_mults) == (1, 2, 4, 8, 16)
    assert tuple(sao.model.strides) == (2, 4, 4, 8, 8) and sao.model.latent_dim == 64
    assert sao.model.sample_rate == 44100 and sao.model.audio_channels == 2 and sao.model.final_tanh is False
    assert sao.dtype == "bfloat16" and sao.param_dtype == "float32"
    assert load_config("configs/vae.py").model.channels == 128  # default variant: sao
    assert load_config("configs/vae.py:tiny").dtype == "float32"
    with pytest.raises(ValueError, match=r"unknown variant 'huge'; expected one of \['dac-tiny', 'sa1', 'sao', "
                                         r"'tiny'\]"):
        load_config("configs/vae.py:huge")
    sa1 = load_config("configs/vae.py:sa1")  # Stable Audio 1.0's DAC VAE: no Oobleck-only keys
    assert sa1.model.type == "dac_vae" and "c_mults" not in sa1.model and sa1.dtype == "bfloat16"


def test_overrides_are_typed():
    config = load_config("configs/vae.py:tiny", [
        "--config.model.channels=16", "model.final_tanh=true", "--config.model.strides=(4, 2)",
        "--config.model.c_mults=[1,4]", "--config.dtype=bfloat16", "--config.mesh.fsdp=4"])
    assert config.model.channels == 16 and config.model.final_tanh is True
    assert config.model.strides == (4, 2) and config.model.c_mults == (1, 4)
    assert config.dtype == "bfloat16" and config.mesh.fsdp == 4
    apply_overrides(config, ["model.strides=2,2"])
    assert config.model.strides == (2, 2)


@pytest.mark.parametrize("override,error,message", [
    ("--config.model.chanels=3", KeyError, r"unknown key config.model.chanels; keys here: \['activation'"),
    ("--config.modle.channels=3", KeyError, r"config.modle is not a section"),
    ("--config.model.channels=wide", ValueError, r"cannot parse as int"),
    ("--config.model.final_tanh=maybe", ValueError, r"cannot parse as bool"),
    ("--config.model.channels", ValueError, r"not of the form --config.key=value"),
])
def test_bad_overrides_name_the_key(override, error, message):
    with pytest.raises(error, match=message):
        load_config("configs/vae.py:tiny", [override])


def test_split_override_args():
    overrides, rest = split_override_args(["show-config", "--config.a=1", "x.py", "--config.b", "2", "--params"])
    assert overrides == ["--config.a=1", "--config.b=2"] and rest == ["show-config", "x.py", "--params"]
    with pytest.raises(ValueError, match="has no value"):
        split_override_args(["--config.a"])


def test_installed_configs_resolve_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout
    assert resolve_config_path("vae.py").endswith("vae.py")
    assert load_config("vae.py:tiny").model.channels == 8
    with pytest.raises(FileNotFoundError, match=r"installed configs: \[.*'vae.py'"):
        load_config("nope.py")
