"""run_loop's hooks: each runs at its own cadence (``(every, fn)``), at the run's last step when asked, after the
step a stop signal ends the run at when asked; a hook can end the loop; every hook's ``close`` runs however the
loop ends; a non-finite loss raises at the next check."""
import signal

import jax.numpy as jnp
import pytest

from stableaudio_jax.training.loop import Hook, NonFiniteLossError, run_loop


def _step(step, state, batch):
    return state + 1, {"finite": jnp.array(step != 99), "loss": jnp.float32(step)}


def test_hooks_run_at_their_own_cadence_and_at_the_end():
    calls = []
    hooks = [(2, lambda s: calls.append(("2", s.done))),
             Hook(3, lambda s: calls.append(("3", s.done)), at_end=True,
                  close=lambda state: calls.append(("closed", state)))]
    state, last = run_loop(0, _step, lambda: None, hooks, start=1, end=7, poll_every=1)
    assert state == 6 and last == {"train/loss": 6.0}
    assert calls == [("2", 2), ("3", 3), ("2", 4), ("2", 6), ("3", 6), ("3", 7), ("closed", 6)]


def test_a_hook_ends_the_loop_and_a_stop_signal_runs_the_at_stop_hooks():
    seen = []

    def stop_at_3(s):
        s.stop = s.done == 3
    state, _ = run_loop(0, _step, lambda: None, [(1, stop_at_3)], start=0, end=10, poll_every=1)
    assert state == 3

    def signal_at_step_4(step, state, batch):
        if step == 4:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C: the loop finishes this step, runs its at_stop hooks, ends
        return _step(step, state, batch)
    hooks = [Hook(100, lambda s: seen.append(("end", s.done)), at_end=True),
             Hook(100, lambda s: seen.append(("stop", s.done, s.stopping)), at_stop=True)]
    state, _ = run_loop(0, signal_at_step_4, lambda: None, hooks, start=0, end=10, poll_every=1)
    assert state == 5 and seen == [("stop", 5, True)]


def test_a_non_finite_loss_raises_at_the_check_and_hooks_still_close():
    closed = []
    hooks = [Hook(1, lambda s: s.window.check(s.done), close=closed.append)]
    with pytest.raises(NonFiniteLossError, match="non-finite loss between steps 99 and 100"):
        run_loop(0, _step, lambda: None, hooks, start=98, end=102, poll_every=1)
    assert closed == [2]
