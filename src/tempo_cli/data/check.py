"""`tempo data check DATA [--frames VIDEO_DATA]`: what a study's data section shows.

Opens labelled data in any form (`data.labelled_data`), makes or reads its split, compares
val and test with train for near-copies and, with `--frames`, the test images with the
pre-training frames (decoded once into the frame cache at `--image-size`, as `tempo pretrain`
decodes them). Writes `runs/<name>/` config.json and metrics.json:

    data: LabelledData.describe() (form, split: given|manifest|seeded, options, images per
          split and class, groups)
    near_copies: [NearCopies.record()] of val and test against train
    frames: NearCopies.record() of test against the pre-training frames (+ `frames`: how
          many), {"skipped": why} when they cannot be read, absent without --frames
"""

from __future__ import annotations

from typing import Any

from tempo_cli.data.labelled_data import open_labelled
from tempo_cli.data.near_copies import check_against_frames, check_and_warn, warning
from tempo_cli.data.split_file import summary_lines
from tempo_cli.errors import TempoError
from tempo_cli.report.progress import log
from tempo_cli.settings.data import DataCheckSettings


def frames_check(data: Any, source: str, image_size: int, quiet: bool) -> dict[str, Any]:
    """The test images of `data` against the frames of `source` (a `--data` of pretrain)."""
    from tempo_cli.data.datasets import resolve_dataset
    from tempo_cli.data.sequences import load_frame_store

    try:
        store = load_frame_store(resolve_dataset(source), image_size, quiet=quiet)
    except TempoError as e:
        return {"skipped": f"frames of {source} not read: {e}"}
    result = check_against_frames(data, store.frames)
    line = warning([result])
    if line:
        log(line)
    return {**result.record(), "frames": len(store)}


def run_data_check(settings: DataCheckSettings) -> dict[str, Any]:
    """Check labelled data (and, with `--frames`, against pre-training frames); metrics."""
    from tempo_cli.report.run_dir import RunDir

    data = open_labelled(settings.data, settings.split_options())
    run = RunDir(settings)
    run.save_config(settings)
    run.update_metrics(data=data.describe(), near_copies=check_and_warn(data))
    if settings.frames is not None and "test" in data.splits():
        run.update_metrics(
            frames=frames_check(data, settings.frames, settings.image_size, settings.quiet)
        )
    run.close()
    for line in summary_lines(data):
        log(line, settings.quiet)
    return run.metrics
