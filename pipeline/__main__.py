"""`python -m pipeline` is `gpucost`."""

from pipeline.cli import main

main()
