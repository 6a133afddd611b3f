"""The pieces of VAE training: spectral losses against auraloss (PyTorch), the STFT discriminator, the learning-rate
schedule and EMA of the reference, and the audio-folder data pipeline."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
import torch

from stableaudio_jax.audio.losses import (SAO_FFT_SIZES, SAO_HOP_SIZES, mrstft_loss, sum_and_difference_loss,
                                          vae_reconstruction_loss)
from stableaudio_jax.data.audio_folder import (CheckpointableIterator, SilentCropCounter, audio_crop_dataset,
                                               host_files, scan_audio_folder)
from stableaudio_jax.data.audio_source import scan_audio_source
from stableaudio_jax.models.autoencoder import count_params
from stableaudio_jax.models.discriminator import (MultiScaleSTFTDiscriminator, discriminator_loss,
                                                  feature_matching_loss, generator_adversarial_loss,
                                                  normalized_spectrogram)
from stableaudio_jax.training.optim import ema_decay, inverse_lr

RNG = np.random.default_rng(0)
REALS = (0.3 * RNG.standard_normal((3, 8192, 2))).astype(np.float32)
DECODED = (REALS + 0.1 * RNG.standard_normal(REALS.shape)).astype(np.float32)


def _torch(a):  # [B, T, C] → torch [B, C, T]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1)))


def _aura(cls, **kw):
    import auraloss
    return getattr(auraloss.freq, cls)(list(SAO_FFT_SIZES), list(SAO_HOP_SIZES), list(SAO_FFT_SIZES),
                                       sample_rate=44100, **kw)


@pytest.mark.parametrize("weighting", [False, True])
def test_mrstft_matches_auraloss(weighting):
    reference = float(_aura("MultiResolutionSTFTLoss", perceptual_weighting=weighting)(_torch(REALS),
                                                                                    _torch(DECODED)))
    ours = float(mrstft_loss(REALS, DECODED, perceptual_weighting=weighting, sc_per_item=False))
    assert abs(ours - reference) <= 1e-5 * abs(reference)


def test_per_item_spectral_convergence_is_auraloss_per_signal():
    """stable-audio-tools' vendored auraloss averages spectral convergence over signals: auraloss on each signal
    alone, with the log-magnitude part (a global mean) unchanged."""
    sc_only = _aura("MultiResolutionSTFTLoss", perceptual_weighting=True, w_log_mag=0.0)
    per_signal = np.mean([float(sc_only(_torch(REALS[i:i + 1, :, c:c + 1]), _torch(DECODED[i:i + 1, :, c:c + 1])))
                          for i in range(3) for c in range(2)])
    ours = float(mrstft_loss(REALS, DECODED, perceptual_weighting=True, w_log_mag=0.0, sc_per_item=True))
    assert abs(ours - per_signal) <= 1e-5 * per_signal


def test_sum_and_difference_and_the_vae_loss():
    sd = _aura("SumAndDifferenceSTFTLoss", perceptual_weighting=True)
    reference_sd = float(sd(_torch(REALS), _torch(DECODED)))
    assert abs(float(sum_and_difference_loss(REALS, DECODED, perceptual_weighting=True, sc_per_item=False))
               - reference_sd) <= 1e-5 * reference_sd
    mr = _aura("MultiResolutionSTFTLoss", perceptual_weighting=True)
    left_right = sum(0.5 * float(mr(_torch(REALS[..., c:c + 1]), _torch(DECODED[..., c:c + 1]))) for c in range(2))
    total = float(vae_reconstruction_loss(REALS, DECODED, sc_per_item=False))
    assert abs(total - (reference_sd + left_right)) <= 1e-5 * total
    # the reference's argument order: reals are auraloss' input, so SC is normalised by the decoded spectrogram
    assert float(vae_reconstruction_loss(REALS, DECODED)) != pytest.approx(float(vae_reconstruction_loss(DECODED,
                                                                                                          REALS)))


def test_discriminator_size_and_spectrogram():
    disc = MultiScaleSTFTDiscriminator()  # the SAO recipe: filters 64, five scales, stereo
    params = jax.eval_shape(lambda: disc.init(jax.random.key(0), jnp.zeros((1, 4096, 2))))
    assert count_params(params) == 1_883_850
    spec = np.asarray(normalized_spectrogram(jnp.asarray(REALS[:1]), 512, 128, 512))
    window = torch.hann_window(512)
    ref = torch.stft(_torch(REALS[:1])[0], 512, 128, 512, window, center=False, return_complex=True)
    ref = (ref / window.pow(2).sum().sqrt()).numpy()  # torchaudio Spectrogram(normalized=True)
    np.testing.assert_allclose(spec[0], ref.transpose(2, 1, 0), atol=1e-5)


def test_gan_losses():
    real = [jnp.array([[2.0, 0.5]]), jnp.array([[-1.0]])]
    fake = [jnp.array([[-2.0, 0.0]]), jnp.array([[1.0]])]
    # scale 0: relu(1-2)=0, relu(1-.5)=.5 → .25 ; relu(1-2)=0, relu(1+0)=1 → .5 ; scale 1: relu(2)=2 + relu(2)=2
    assert float(discriminator_loss(real, fake)) == pytest.approx(((0.25 + 0.5) + (2 + 2)) / 2)
    assert float(generator_adversarial_loss(fake)) == pytest.approx((1.0 - 1.0) / 2)
    feats_r = [[jnp.ones((1, 2)), jnp.zeros((1, 2))]]
    feats_f = [[jnp.zeros((1, 2)), jnp.zeros((1, 2))]]
    assert float(feature_matching_loss(feats_r, feats_f)) == pytest.approx(0.5)


def test_inverse_lr_and_ema_decay_follow_the_reference():
    lr = inverse_lr(1.5e-4, inv_gamma=200_000, power=0.5, warmup=0.999)
    assert float(lr(0)) == pytest.approx(1.5e-7, rel=1e-4)  # lr_G(0) = 1.5e-4 * (1 - 0.999)
    k = 999
    assert float(lr(k)) == pytest.approx(1.5e-4 * (1 - 0.999 ** (k + 1)) * (1 + k / 2e5) ** -0.5, rel=1e-5)
    decays = [float(ema_decay(n)) for n in range(1, 6)]
    assert decays[:3] == [0.0, 0.0, 0.0]  # the first three updates copy the weights
    assert decays[3] == pytest.approx(1 - 3 ** -0.75, rel=1e-6) and decays[4] == pytest.approx(1 - 4 ** -0.75)
    assert float(ema_decay(10 ** 7)) == pytest.approx(0.9999)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    t = np.arange(44100) / 44100
    sf.write(root / "tone.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100)  # mono
    stereo = np.stack([np.sin(2 * np.pi * 220 * t[:22050]), np.sin(2 * np.pi * 330 * t[:22050])], 1)
    sf.write(root / "stereo_22k.flac", (0.4 * stereo).astype(np.float32), 22050)
    quiet = np.zeros(88200, np.float32)
    quiet[-4000:] = 0.5  # silent except the very end: crops must be re-drawn
    sf.write(root / "mostly_silent.wav", quiet, 44100)
    sf.write(root / "short.wav", np.full(500, 0.3, np.float32), 44100)  # shorter than a crop: zero-padded
    (root / "sub").mkdir()
    sf.write(root / "sub" / "six_channels.wav", 0.2 * np.ones((8000, 6), np.float32), 48000)
    (root / "broken.wav").write_bytes(b"RIFF but not really")
    (root / "readme.txt").write_text("not audio")
    return root


def test_scan_skips_and_reports(folder, tmp_path):
    scan = scan_audio_folder(folder)
    assert len(scan.files) == 5 and [p for p, _ in scan.skipped] == [str(folder / "broken.wav")]
    assert "5 audio files" in scan.report() and "skipped" in scan.report()
    with pytest.raises(ValueError, match="no readable audio files"):
        scan_audio_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_audio_folder(tmp_path / "nope")


def test_random_crops(folder):
    scan = scan_audio_folder(folder)
    it = CheckpointableIterator(audio_crop_dataset(scan, 5, 44100, 2, 2048, seed=3))
    batch = next(it)
    audio = batch["audio"]
    assert audio.shape == (5, 2048, 2) and audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
    peaks = np.abs(audio).max(axis=(1, 2))
    assert np.all(peaks >= 1e-3)  # silent windows were re-drawn
    short = [i for i in range(5) if batch["padding_mask"][i].sum() < 2048]
    assert short and all(not audio[i, 500:].any() for i in short)  # the 500-sample file, zero padded
    signs = [np.sign(next(it)["audio"][:, :, :].sum()) for _ in range(20)]
    assert 0 < sum(s < 0 for s in signs) < 20  # phase flips happen, not always


def test_iterator_position_resumes_exactly(folder):
    scan = scan_audio_folder(folder)
    a = CheckpointableIterator(audio_crop_dataset(scan, 4, 44100, 2, 1024, seed=1))
    for _ in range(3):
        next(a)
    state = a.state()
    want = [next(a)["audio"] for _ in range(2)]
    b = CheckpointableIterator(audio_crop_dataset(scan, 4, 44100, 2, 1024, seed=1))
    b.restore(state)
    got = [next(b)["audio"] for _ in range(2)]
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)


def test_crops_from_an_ingested_dataset(folder, tmp_path):
    from stableaudio_jax.data.ingest import ingest
    ingest(folder, tmp_path / "ingested", missing_caption="")
    scan = scan_audio_source(tmp_path / "ingested")
    assert len(scan.files) == 5 and [p for p, _ in scan.skipped] == ["broken.wav"]  # ingest's own skip
    assert all(f.sample_rate == 44100 and f.channels == 2 for f in scan.files)
    a = CheckpointableIterator(audio_crop_dataset(scan, 4, 44100, 2, 1024, seed=1))
    batch = next(a)
    assert batch["audio"].shape == (4, 1024, 2) and np.all(np.abs(batch["audio"]).max(axis=(1, 2)) >= 1e-3)
    state, want = a.state(), next(a)["audio"]
    b = CheckpointableIterator(audio_crop_dataset(scan, 4, 44100, 2, 1024, seed=1))
    b.restore(state)
    np.testing.assert_array_equal(next(b)["audio"], want)
    assert isinstance(scan_audio_source(folder).files[0].path, str)  # a plain folder still works


def test_crops_still_silent_after_the_redraws_are_counted(tmp_path, caplog):
    tmp_path.joinpath("silence").mkdir()
    sf.write(tmp_path / "silence" / "quiet.wav", np.zeros(8000, np.float32), 44100)
    scan = scan_audio_folder(tmp_path / "silence")
    data = SilentCropCounter(CheckpointableIterator(audio_crop_dataset(scan, 3, 44100, 2, 1024, max_redraws=2)), 2)
    with caplog.at_level("WARNING"):
        batch = next(data)
    assert "redraws_exhausted" not in batch and data.total == 3
    assert "3 crop(s) in this batch stayed silent or non-finite after 2 re-draws" in caplog.text


def test_hosts_read_disjoint_files():
    files = list(range(10))
    shards = [host_files(files, i, 4)[0] for i in range(4)]
    assert sorted(sum(shards, [])) == files and all(set(a).isdisjoint(b) for a in shards for b in shards if a != b)
    few = [host_files([1, 2], i, 4) for i in range(4)]
    assert all(f == [1, 2] for f, _ in few) and len({seed for _, seed in few}) == 4  # row-sharding fallback
