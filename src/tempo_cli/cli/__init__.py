"""The command-line layer: parse, validate into settings, call one core function per command."""
