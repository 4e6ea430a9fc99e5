"""`python -m pipeline` is `gpucost`."""

from pipeline.cli import main

# Guarded: importing this module (as multiprocessing's "spawn" would, under another name) must
# not run the command line. The snapshot's worker processes are `python -m pipeline.workers`.
if __name__ == "__main__":
    main()
