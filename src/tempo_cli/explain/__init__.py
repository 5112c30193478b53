"""What the features look at: LRP heatmaps, noise robustness, relevance inside the hand mask.

- `lrp.run(settings)`: `tempo explain lrp` (a heatmap PNG per image and model).
- `adversarial.run(settings)`: `tempo explain adversarial` (noise levels or FGSM/PGD).
- `relevance.run(settings)`: `tempo explain relevance` (relative relevance, SPEC.md).

Shared pieces: `inputs` (the split and the classifiers of a command, read through `data/`
and `models/classifier.py`), `attribution` (the `METHODS` registry: zennit LRP, captum),
`attacks` (the `ATTACKS` registry: noise, FGSM, PGD; `NOISES`: gaussian, uniform),
`colours` (the `CMAPS` registry of heatmap colours), `figures` (PNG heatmaps, contact
sheets, plots).
"""
