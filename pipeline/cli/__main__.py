"""`python -m pipeline.cli …` is the `drmnet` command (e.g. under `torchrun -m pipeline.cli train drmnet`)."""

from pipeline.cli import main

main()
