"""Study planning, torch-free: a grid of runs resolved against its preset (`plan.py`) and the
sweep files that hold grids (`sweeps.py`). Commands (`queue add`, `demo`) and the dashboard's
queue form plan through here; nothing here imports Typer or torch.
"""
