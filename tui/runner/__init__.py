"""The runner: what trains queued runs, apart from the commands that start it.

    worker.py     the claim → train → record loop (`Worker`), its heartbeat thread, and
                  `run_config` (the run as it was queued)
    provision.py  the data set a run needs, generated once under a lock (`provide_dataset`:
                  with a progress bar, for the foreground commands)
    foreground.py `diffbench train`'s run: into a folder, with a live display, Ctrl-C
                  checkpoints
    study.py      `diffbench demo`'s study: queued once, an in-process worker and helper
                  worker processes, a live display
    gpus.py       ``--gpus``/``--per-gpu``: one worker process per GPU slot, signals passed on
    mps.py        the CUDA MPS daemon several workers on one GPU share
    sink.py       trainer records → the job database (`StorageSink`)

No module here imports Typer; the commands in `tui/commands/` start them.
"""
