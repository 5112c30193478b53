"""What every trainer shares (`pretrain`, `segment`, `eval semisup`): one idea per module.

A loop reads: build -> restore -> for each step: train_step -> maybe evaluate/checkpoint.

`tempo_cli.training.stop`
    `StopRequest()`: context manager; SIGINT/SIGTERM set `.requested` (and
    `.signal_name`, e.g. "SIGTERM") instead of raising, so the loop polls it *between*
    steps and saves a consistent state; a second SIGINT raises KeyboardInterrupt at once.
    Does nothing outside the main thread. Typical use::

        with StopRequest() as stop:
            for step in ...:
                train_step(...)
                if stop.requested:
                    save(...); raise Interrupted("...")   # exit 130

`tempo_cli.training.step_log`
    `StepLogger(writer, *, total, description, quiet, every=1, done=0, tag="loss")`: context
    manager around a `ProgressBar`. Per step, `add(step, loss, **scalars) -> bool` keeps the loss
    (a 0-d tensor, left on the device) and other scalars (tensors or floats) and says
    whether `every` steps are pending; `flush(hint) -> list[LoggedStep]` reads them back
    (one device sync), raises `TempoError` (one line, `nonfinite_error(step, hint)`)
    when a loss is nan/inf, writes TensorBoard (`loss` tag and each scalar's name) and
    returns them; `advance(**fields)` moves the bar one step (showing the last loss read).
    `read()` / `write(rows)` / `LoggedStep.finite` are the two halves of `flush` for a
    distributed caller that must agree on "non-finite" across ranks first.
    `readback_every(device) -> int`: 1 on CPU (free), 10 on a GPU (one sync per 10 steps).
    `finite_weights(module) -> bool`: check before saving, so a blown-up step never
    overwrites the last good checkpoint. Typical use::

        with StopRequest() as stop, StepLogger(writer, total=n, description="semisup",
                                               quiet=q, every=readback_every(dev)) as steps:
            for step in range(1, n + 1):
                loss = train_step(...)
                if steps.add(step, loss, lr=lr) or stop.requested:
                    steps.flush("lower --lr")     # TempoError on nan/inf
                steps.advance()
                if stop.requested: ...

`tempo_cli.training.state`
    The one resumable checkpoint envelope: `TrainingState(kind, settings, position,
    model=None, optimizer=None, scaler=None, rng={}, payload={}, version=VERSION)`.
    `TrainingState.capture(kind, settings=, position=, model=, optimizer=, scaler=,
    payload=)` takes state dicts and the RNG of Python/NumPy/torch/CUDA now;
    `restore(model=None, optimizer=None, scaler=None)` loads what is given and the RNG.
    `save_state(path, state, *, product=None) -> Path` writes atomically (with `product`
    = keyword arguments of `models.checkpoint.save_checkpoint`, the envelope rides in a
    product checkpoint's `training_state`, so `load_model` still reads it);
    `load_state(path, kind, *, hint) -> TrainingState` (weights_only; one-line
    TempoError for a missing/unreadable file, another kind, a newer version). Version 1
    files (pre-training's old `training_state`, segment's old file) are upgraded on load.
    Kinds in use: "tempo-pretrain" (pretrain.state), "tempo-segment" (segment.loop).

`tempo_cli.training.resume`
    `merge_resumed_settings(settings, saved, runtime_fields) -> settings`: the saved
    settings of a `--resume`d run, except options given now (`model_fields_set`);
    `runtime_fields` (how this invocation runs: device, quiet, ...) never come from the
    file.
"""
