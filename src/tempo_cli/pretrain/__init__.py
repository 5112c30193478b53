"""The Tempo pre-training loop. Core entry point: `run(settings) -> metrics dict`.

Example (a notebook)::

    from tempo_cli.pretrain import run
    from tempo_cli.settings.pretrain import PretrainSettings

    metrics = run(PretrainSettings(data="demo", backbone="resnet18", init="random",
                                   image_size=32, batch_size=64, optimizer="adamw",
                                   l=0.005, proximity=5, epochs=4, name="demo"))
"""

from tempo_cli.pretrain.loop import PretrainResult, run, train

__all__ = ["PretrainResult", "run", "train"]
