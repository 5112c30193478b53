"""tempo: learn image features from video by temporal coherence."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tempo-cli")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+src"
