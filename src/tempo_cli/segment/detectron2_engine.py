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

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempo_cli.errors import TempoError
from tempo_cli.segment.detectron2_config import DEPTHS, D2Spec, require_detectron2
from tempo_cli.training.state import TrainingState, load_state

if TYPE_CHECKING:
    from tempo_cli.segment.engines import SegmentJob

KIND = "tempo-segment"  # the same envelope kind as the torchvision engine (segment.train)
_HINT = "give runs/<name>/last.pt of a segment run; to start from a backbone use --path"


class Detectron2Engine:
    """`--engine detectron2` (optional dependency)."""

    name = "detectron2"

    def available(self) -> bool:
        try:
            require_detectron2()
        except TempoError:
            return False
        return True

    def require(self) -> None:
        """TempoError (one line: the install command) unless detectron2 imports."""
        require_detectron2()

    def restore(self, resume: Path) -> tuple[dict[str, Any], TrainingState]:
        """(the run's saved settings, its training state) of `--resume` (last.pt)."""
        state = load_state(resume, KIND, hint=_HINT)
        return state.settings, state

    def train(self, job: SegmentJob, resumed: TrainingState | None) -> dict[str, Any]:
        """Train and evaluate from backbone `job.path` (or continue `resumed`); its record."""
        from tempo_cli.runtime import seed_everything
        from tempo_cli.segment.batches import make_data
        from tempo_cli.segment.core import backbone_state
        from tempo_cli.segment.detectron2_train import D2Run, detectron2_logs, log_path
        from tempo_cli.segment.train import auto_freezing

        require_detectron2()
        settings, path, train_split = job.settings, job.path, job.train_split
        data = make_data(
            job.root, train_split, job.test_split, settings.train_images, settings.eval_images
        )
        body_state = None
        if resumed is not None:
            saved_ids = resumed.payload["category_ids"]
            if saved_ids != train_split.category_ids:
                raise TempoError(
                    f"{settings.resume} was trained on {len(saved_ids)} categories, {job.root} "
                    f"has {len(train_split.category_ids)}; use the same --data"
                )
            spec = D2Spec(**resumed.payload["model_spec"])
        else:
            arch, body_state = backbone_state(path, settings.backbone)
            if arch not in DEPTHS:
                raise TempoError(f"{path}: a {arch} backbone; Mask R-CNN takes ResNet-18/34/50")
            trainable, frozen_bn = auto_freezing(settings, path)
            spec = D2Spec(arch, train_split.num_classes, trainable, frozen_bn)
            # Seeded again after the backbone is read (`random` draws from the RNG): the FPN
            # and the heads then start identical for every backbone of a comparison.
            seed_everything(settings.seed)
        with detectron2_logs(log_path(job.run_dir)):
            run = D2Run(settings, data, job.run_dir, job.device, path, spec)
            run.build(body_state)
            run.restore(resumed)
            run.loop()
            return run.finish()


ENGINE = Detectron2Engine()
