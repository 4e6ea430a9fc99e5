"""`python -m pipeline` is `gpucost`."""

from pipeline.cli import main

# Guarded: a worker process the snapshot starts (multiprocessing's "spawn") imports this
# module again under another name, and must not run the command line.
if __name__ == "__main__":
    main()
