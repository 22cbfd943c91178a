"""steinbench harness, by job: ``cli`` (``python -m benchmark``), ``run`` (config, factories,
training loop, run directory), ``probe`` (the gradient-variance probe), ``sweep`` (grids of
cells, local or on Ray), ``checks`` (golden regression, tiny runs, scale check) and
``clip_trajectories`` (training data for the world CLIP from real runs)."""
