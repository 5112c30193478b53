"""`python -m tempo_cli ...` (what `torchrun -m tempo_cli` runs)."""

from tempo_cli.cli.main import main

if __name__ == "__main__":
    main()
