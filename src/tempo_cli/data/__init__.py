"""Data layer: frames, videos, the decoded-frame cache, temporal pairs, labelled splits.

Submodules (imported explicitly; nothing heavy is imported here so `tempo --help` stays fast):

- `transforms`: ImageNet normalisation, resize + crop to uint8 tensors.
- `frames`: image folders (sorted names) and robust image reading.
- `video`: video files decoded with PyAV.
- `sequences`: `FrameStore` (all frames of all sequences, uint8, cached on disk).
- `pairs`: the exact temporal partner pmfs and their O(1) samplers; per-epoch pairs.
- `labelled`: `train`, `train-N`, `val`, `test` splits with the ASL class index.
- `labelled_data`: THE loader of labelled images (split folders, a class-folder tree, a
  manifest CSV: `open_labelled`); `splits` (seeded, stratified, group-aware splits),
  `manifest` (read/write the CSV), `split_file` (`tempo data split`), `near_copies`.
- `datasets`: `--data NAME|PATH` -> a folder (generates `demo` on first use).
"""

# The 24 ASL classes: no J and no Z (those signs need motion). Class index = position
# (SPEC.md). Defined here, free of imports, so light modules (the demo renderer) share it.
ASL_LETTERS = "ABCDEFGHIKLMNOPQRSTUVWXY"
