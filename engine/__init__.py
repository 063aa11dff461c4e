"""The science: Kolmogorov-flow data, the score U-Net, diffusion, optimizers, schedules, training.

The engine never imports `diffbench.storage` or `diffbench.tui`.
"""
