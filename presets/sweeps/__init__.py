"""Sweep files shipped with diffbench (`diffbench queue sweeps`): paper-best, paper-lr,
paper-schedules, paper-longer and demo."""
