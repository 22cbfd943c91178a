"""One run, from its config to its results directory: ``config`` / ``typed_config`` /
``yaml_io`` (the typed run config and its YAML), ``prompts``, ``factories`` (every component is
built here), ``trainer`` (one cell's training loop), ``runner`` (the run: cells, store,
manifest), ``parallel_cells``, ``store``, ``checkpoint``, ``resume``, ``runlock``, ``timing``
and ``streams`` (the seeded random streams)."""
