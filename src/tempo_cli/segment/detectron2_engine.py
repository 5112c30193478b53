"""`tempo segment --engine detectron2`: Mask R-CNN through detectron2 itself (optional).

detectron2 is not on the package registry; users build it from source (the install line is
`detectron2_config.INSTALL`). When it imports, this engine trains SPEC.md's configuration
(the model-zoo `mask_rcnn_R_50_FPN_3x`, bitmask masks, RGB input with SPEC.md's pixel
mean/std, `STRIDE_IN_1X1 = False`; ResNet-18/34 through detectron2's BasicBlock settings)
with detectron2's model, solver, data mapping and COCOEvaluator, in tempo's training loop
(segment.detectron2_train). The backbone is read by tempo (any format `--path` takes,
`.pkl` through the restricted unpickler) and handed to detectron2 as a state dict. The
datasets are the validated COCO files the torchvision engine reads (written into
`runs/<name>/coco/` and registered), the batches are the torchvision engine's (same seed,
same order and flips), and the outputs are the same: metrics.json (`evals`,
`iterations_to_90pct_final_segm_AP`, `final`), TensorBoard, `ap.png`, `predictions.png`,
and `last.pt` (tempo's training envelope: `--resume` continues, Ctrl-C exits 130).
detectron2's own log goes to `runs/<name>/detectron2.log`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from tempo_cli.segment.batches import SegmentData
from tempo_cli.segment.detectron2_config import D2Spec, require_detectron2
from tempo_cli.segment.loop import Body, SegmentEngine, SegmentJob, SegmentRun
from tempo_cli.settings.segment import SegmentSettings


class Detectron2Engine(SegmentEngine[D2Spec]):
    """`--engine detectron2` (optional dependency)."""

    name = "detectron2"

    def require(self) -> None:
        """TempoError (one line: the install command) unless detectron2 imports."""
        require_detectron2()

    def new_spec(self, settings: SegmentSettings, body: Body) -> D2Spec:
        return D2Spec(body.arch, body.num_classes, body.trainable_layers, body.frozen_bn)

    def saved_spec(self, settings: SegmentSettings, saved: dict[str, Any]) -> D2Spec:
        return D2Spec(**saved)

    def session(self, job: SegmentJob) -> AbstractContextManager[object]:
        """detectron2's log records go to runs/<name>/detectron2.log."""
        from tempo_cli.segment.detectron2_train import detectron2_logs, log_path

        return detectron2_logs(log_path(job.run_dir))

    def make_run(self, job: SegmentJob, data: SegmentData, spec: D2Spec) -> SegmentRun[D2Spec]:
        from tempo_cli.segment.detectron2_train import D2Run

        return D2Run(job, data, spec)


ENGINE = Detectron2Engine()
