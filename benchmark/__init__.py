"""steinbench harness: CLI, config, random streams, training loop, measurements, results."""
