"""The shared training pieces: stop request, step logger, checkpoint envelope, resume rules."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tempo_cli.errors import TempoError
from tempo_cli.training.resume import merge_resumed_settings
from tempo_cli.training.state import VERSION, TrainingState, load_state, save_state
from tempo_cli.training.step_log import StepLogger, readback_every
from tempo_cli.training.stop import StopRequest

# --- stop request --------------------------------------------------------------------------


def test_signals_set_a_flag_and_a_second_sigint_stops_at_once() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"  # no exception: the flag
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the user insists
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"


# --- step logger ---------------------------------------------------------------------------


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_step_logger_reads_back_every_n_steps_and_writes_tensorboard(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    assert readback_every(torch.device("cpu")) == 1
    assert readback_every(torch.device("cuda", 0)) == 10
    writer = SummaryWriter(str(tmp_path))
    losses = [0.5, 0.25, 0.125, 1.5]
    with StepLogger(writer, total=4, description="t", quiet=True, every=3, tag="loss") as log:
        due = [
            log.add(k + 1, torch.tensor(v), part=torch.tensor(2 * v), lr=0.1)
            for k, v in enumerate(losses[:3])
        ]
        assert due == [False, False, True] and log.pending == 3
        rows = log.flush("hint")
        assert [(r.step, r.loss, r.scalars) for r in rows] == [
            (k + 1, v, {"part": 2 * v, "lr": 0.1}) for k, v in enumerate(losses[:3])
        ]
        assert log.pending == 0 and log.last == 0.125
        log.add(4, torch.tensor(losses[3], dtype=torch.float64), lr=0.1)
        assert [r.loss for r in log.flush("hint")] == [1.5]
    writer.close()
    events = _events(tmp_path)
    assert [v for _, v in events["loss"]] == losses
    assert [s for s, _ in events["part"]] == [1, 2, 3]
    assert [v for _, v in events["lr"]] == pytest.approx([0.1] * 4)


def test_step_logger_stops_at_a_nonfinite_loss_with_one_line() -> None:
    with StepLogger(None, total=None, description="t", quiet=True, every=5) as log:
        log.add(7, torch.tensor(1.0))
        log.add(8, torch.tensor(float("nan")))
        with pytest.raises(TempoError) as e:
            log.flush("the last good checkpoint is runs/x/last.pt")
    msg = str(e.value)
    assert "non-finite" in msg and "step 8" in msg and "runs/x/last.pt" in msg
    assert "\n" not in msg


# --- the checkpoint envelope -----------------------------------------------------------------


def _trained() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


@pytest.mark.parametrize("as_product", [False, True])
def test_state_round_trip_restores_weights_optimizer_and_every_rng(
    tmp_path: Path, as_product: bool
) -> None:
    from tempo_cli.models.backbones import build_resnet
    from tempo_cli.models.checkpoint import load_model

    model, opt = _trained()
    random.seed(1)
    np.random.seed(1)
    state = TrainingState.capture(
        "tempo-test", settings={"lr": 0.1}, position={"step": 3}, model=model, optimizer=opt,
        payload={"evals": [1.0]},
    )  # fmt: skip
    expected = _draws()
    product = None
    if as_product:  # the envelope inside a product checkpoint, as pre-training writes it
        product = {"arch": "resnet18", "backbone": build_resnet("resnet18", "random")}
    path = save_state(tmp_path / "last.pt", state, product=product)
    _draws()  # move every generator on

    loaded = load_state(path, "tempo-test", hint="h")
    assert (loaded.settings, loaded.position, loaded.payload) == (
        {"lr": 0.1},
        {"step": 3},
        {"evals": [1.0]},
    )
    assert loaded.version == VERSION and loaded.scaler is None
    fresh = nn.Linear(3, 2)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    loaded.restore(model=fresh, optimizer=fresh_opt)
    assert _draws() == expected
    assert torch.equal(fresh.weight, model.weight)
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(fresh_opt.state_dict()["state"][0]["momentum_buffer"], buf)
    if as_product:
        assert load_model(path).arch == "resnet18"  # still a model for eval / --init


def test_load_state_errors_are_one_line(tmp_path: Path) -> None:
    def error(path: Path, kind: str = "tempo-test") -> str:
        with pytest.raises(TempoError) as e:
            load_state(path, kind, hint="give runs/<name>/last.pt")
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "no such file" in error(tmp_path / "missing.pt")
    good = save_state(
        tmp_path / "a.pt", TrainingState.capture("tempo-other", settings={}, position={})
    )
    msg = error(good)
    assert "not a `tempo test` checkpoint" in msg and "`tempo other`" in msg
    assert "runs/<name>/last.pt" in msg
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    assert "not a `tempo test` checkpoint" in error(tmp_path / "foreign.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    assert "not a readable checkpoint" in error(tmp_path / "cut.pt")
    newer = TrainingState.capture("tempo-test", settings={}, position={})
    newer.version = VERSION + 1
    msg = error(save_state(tmp_path / "new.pt", newer))
    assert f"version {VERSION + 1}" in msg and "upgrade tempo" in msg
    old = TrainingState.capture("tempo-test", settings={}, position={})
    old.version = 0
    assert "version 0" in error(save_state(tmp_path / "old.pt", old))


# --- resume rules ------------------------------------------------------------------------------


def test_resumed_settings_keep_given_options_and_never_take_runtime_ones() -> None:
    from tempo_cli.settings import load_settings
    from tempo_cli.settings.segment import SegmentSettings

    saved = load_settings(
        SegmentSettings, {"data": "demo", "max_iter": 7, "lr": 0.5, "device": "cuda", "quiet": True}
    ).model_dump(mode="json")
    now = load_settings(SegmentSettings, {"resume": "x.pt", "max_iter": 9})
    merged = merge_resumed_settings(now, saved, {"device", "quiet", "resume"})
    assert (merged.data, merged.lr, merged.max_iter) == ("demo", 0.5, 9)
    assert (merged.device, merged.quiet, merged.resume) == ("auto", False, "x.pt")
    assert merged.model_fields_set == now.model_fields_set


def test_interrupt_seen_remembers_a_ctrl_c_that_a_job_swallowed() -> None:
    """`tempo study` checks `.seen` between stages: a stage that caught the KeyboardInterrupt
    somewhere inside must not let the study run on. The previous handler still acts (the
    default raises at once) and is back in place afterwards."""
    import contextlib

    from tempo_cli.training.stop import InterruptSeen

    before = signal.getsignal(signal.SIGINT)
    with InterruptSeen() as ctrl_c:
        assert not ctrl_c.seen
        with contextlib.suppress(KeyboardInterrupt):  # a job that swallows it
            signal.raise_signal(signal.SIGINT)
        assert ctrl_c.seen
    assert signal.getsignal(signal.SIGINT) is before
