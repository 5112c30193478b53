"""The registry of `tempo eval` protocols: adding one is one module plus one line here.

A protocol module defines an `EvalProtocol` subclass (`evaluate/protocol.py`): its name,
settings class, figures and `evaluate(task)`. The command itself is a function in
`cli/evaluate.py` that builds the settings and calls `evaluate.run.run_eval`.
"""

from __future__ import annotations

from tempo_cli.evaluate.knn import KnnProtocol
from tempo_cli.evaluate.linear import LinearProtocol
from tempo_cli.evaluate.protocol import EvalProtocol
from tempo_cli.evaluate.semisup import SemisupProtocol
from tempo_cli.settings.evaluate import EvalSettings

PROTOCOLS: dict[str, EvalProtocol] = {
    p.name: p for p in (LinearProtocol(), SemisupProtocol(), KnnProtocol())
}


def protocol_for(settings: EvalSettings) -> EvalProtocol:
    """The protocol whose settings class `settings` is (`EvalLinearSettings` -> linear)."""
    for protocol in PROTOCOLS.values():
        if type(settings) is protocol.settings_cls:
            return protocol
    raise TypeError(f"no evaluation protocol takes {type(settings).__name__}")
