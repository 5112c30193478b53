"""The model card (README.md) of an exported model folder.

What a colleague needs before using the backbone: what it is, how it was pre-trained
(from the settings the checkpoint records), what a study measured of it (`--study --arm`),
how to load it with torchvision, timm and tempo, a licence field left for the user, and
its limits. Hugging Face Hub metadata sits in the YAML front matter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tempo_cli.models.checkpoint import LoadedModel
from tempo_cli.models.study_evaluation import ArmEvaluation, table_markdown

#: Pre-training settings the card lists, with their labels (PretrainSettings field names).
PRETRAIN_ROWS = (
    ("data", "frames (data)"),
    ("pairs", "pairs"),
    ("pdf", "neighbour pdf"),
    ("proximity", "proximity (frames)"),
    ("augment", "augmentation"),
    ("epochs", "epochs"),
    ("batch_size", "batch size (pairs)"),
    ("image_size", "image size (px)"),
    ("init", "initial weights"),
    ("optimizer", "optimiser"),
    ("lr", "learning rate"),
    ("l", "Barlow Twins lambda"),
    ("loss_std", "loss std"),
    ("precision", "precision"),
    ("seed", "seed"),
)


@dataclass
class CardFacts:
    """What the card says beyond the model: its folder name, where it came from."""

    name: str  # the folder's name
    source: str  # the --path as given (a file name is shown, not its folder)
    content_id: str
    tempo_version: str
    image_size: int  # the side the config declares (the recorded one, else 224)
    evaluation: ArmEvaluation | None = None


def front_matter(model: LoadedModel) -> str:
    return "\n".join(
        [
            "---",
            "# Set the licence before sharing: e.g. mit, apache-2.0, cc-by-4.0 (the Hub's ids).",
            "license: unknown",
            "library_name: timm",
            "pipeline_tag: image-feature-extraction",
            "tags:",
            "- image-feature-extraction",
            "- timm",
            "- tempo",
            "- self-supervised",
            f"- {model.arch}",
            "---",
        ]
    )


def _value(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return f"`{json.dumps(v)}`"
    text = str(v)
    return Path(text).name if "/" in text else text  # a data folder: its name, not your disk


def pretraining_section(model: LoadedModel) -> str:
    """How it was pre-trained: the recorded settings, or what is not known."""
    settings = model.meta.get("settings")
    if not isinstance(settings, dict):
        how = {
            "random": "It is a randomly initialised ResNet: it was not trained.",
            "imagenet": "It holds torchvision's ImageNet (IMAGENET1K_V1) weights.",
        }.get(
            model.source_format,
            f"It was read from a {model.source_format} checkpoint that records no "
            "pre-training settings, so this card cannot say how it was trained.",
        )
        return "## How it was pre-trained\n\n" + how
    views = (
        "a frame and an augmented copy of itself are two views of one thing (image SSL)"
        if settings.get("pairs") == "same"
        else "a frame and a temporal neighbour drawn from the pdf below are two views of one "
        "thing (temporal coherence)"
    )
    lines = [
        "## How it was pre-trained",
        "",
        f"Barlow Twins on pairs of video frames: {views}; the projection head was then",
        "dropped. The settings, as the checkpoint records them:",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {_value(settings[k])} |" for k, label in PRETRAIN_ROWS if k in settings]
    if model.meta.get("epoch") is not None:
        done = f"{model.meta['epoch']} epochs, {model.meta.get('step', '?')} steps"
        lines += ["", f"Trained: {done} (the run's last saved position)."]
    return "\n".join(lines)


def evaluation_section(ev: ArmEvaluation | None) -> str:
    if ev is None:
        return (
            "## Evaluation\n\nNot given: export from a study arm (`tempo export --study "
            "runs/NAME --arm ARM`) to include what the study measured."
        )
    lines = [
        "## Evaluation",
        "",
        f"Measured by the tempo study `{ev.study}`, arm `{ev.arm}`, on the labelled data "
        f"`{_value(ev.labelled)}` at {ev.image_size} px. Accuracy in %, mean ± std over "
        "the runs named under each table; columns are labelled samples per class.",
    ]
    if ev.repeats > 1:
        lines += [
            "",
            f"The arm was pre-trained {ev.repeats} times (seeds); the table is over all "
            "of them, and this folder holds the first one's weights.",
        ]
    if not ev.tables:
        lines += ["", "The study has no accuracy table for this arm (no stage finished)."]
    for table in ev.tables:
        lines += ["", f"### {table.title}", "", table_markdown(table, ev.arm, ev.baseline)]
        if table.over:
            lines += ["", f"± over: {table.over}."]
    return "\n".join(lines)


def loading_section(model: LoadedModel, facts: CardFacts) -> str:
    n, s = facts.name, facts.image_size
    return f"""## How to load it

The weights are a torchvision/timm `{model.arch}` without its classifier (`fc`); the
model maps images (N, 3, {s}, {s}), normalised with the ImageNet mean and std of
`config.json`, to features (N, {model.feature_dim}).

torchvision:

```python
import torch
import torchvision
from safetensors.torch import load_file

model = torchvision.models.{model.arch}()
missing, unexpected = model.load_state_dict(load_file("{n}/model.safetensors"), strict=False)
assert unexpected == [] and sorted(missing) == ["fc.bias", "fc.weight"]
model.fc = torch.nn.Identity()  # features, not ImageNet logits
```

timm (from this folder, or from the Hub once pushed: `hf-hub:USER/{n}`):

```python
import timm

model = timm.create_model("local-dir:{n}", pretrained=True)  # num_classes=0: features
```

tempo (every `--path` takes the folder):

```
tempo eval linear --path {n} --data asl
```
"""


def limits_section(model: LoadedModel, facts: CardFacts) -> str:
    settings = model.meta.get("settings")
    data = _value(settings.get("data")) if isinstance(settings, dict) else "its training data"
    return f"""## Limits

- Domain: the features were learnt from `{data}`; on images unlike those (other
  subjects, lighting, cameras) they are untested and may be poor. Measure on your data.
- Resolution: trained or probed at {facts.image_size} px; other input sizes run (the
  ResNet pools globally) but were not what the numbers above measured.
- A feature extractor, not a classifier: there is no head. BatchNorm statistics are those
  of the training data; use `model.eval()`.
- Licence: set `license` in the front matter above before you share the folder; the
  training data's own terms apply to the weights too."""


def provenance_section(model: LoadedModel, facts: CardFacts) -> str:
    return f"""## Provenance

Exported by tempo {facts.tempo_version} from `{Path(facts.source).name}` (a
{model.source_format} checkpoint, content id `{facts.content_id}`). `model.safetensors`'s
header metadata records the same, and the pre-training settings as JSON."""


def model_card(model: LoadedModel, facts: CardFacts) -> str:
    """README.md of the folder (Markdown with the Hub's YAML front matter)."""
    intro = (
        f"# {facts.name}\n\nA {model.arch} image feature extractor "
        f"({model.feature_dim} features) from tempo, which learns image features from "
        "video by temporal coherence. Files: "
        "`model.safetensors` (the weights), `config.json` (timm's config: architecture, "
        "input size, normalisation) and this card."
    )
    parts = [
        front_matter(model),
        intro,
        pretraining_section(model),
        evaluation_section(facts.evaluation),
        loading_section(model, facts),
        limits_section(model, facts),
        provenance_section(model, facts),
    ]
    return "\n\n".join(parts) + "\n"
