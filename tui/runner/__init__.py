"""The runner: what trains queued runs, apart from the commands that start it.

    worker.py     the claim → train → record loop (`Worker`), its heartbeat thread, and
                  `run_config` (the run as it was queued)
    provision.py  the data set a run needs: one naming rule, generated once under a lock
    gpus.py       ``--gpus``/``--per-gpu``: one worker process per GPU slot, signals passed on
    mps.py        the CUDA MPS daemon several workers on one GPU share
    sink.py       trainer records → the job database (`StorageSink`)

No module here imports Typer; `tui/commands/worker.py` is the command.
"""
