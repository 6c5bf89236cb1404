"""Benchmarks of msgldm_auto: scripts that measure quality and speed and write documentation/benchmarks.md.

Run each one as a module from the repository root, e.g. `.venv/bin/python -m benchmarks.bench_speed --help`. They
call the product's public objects (`MSGLDMPredictor`, the `msgldm_*` commands and training entry points, the
evaluation functions) and never copy its code or use its private names, so a figure is what a user's run gives.
Importing the package or any of its modules runs nothing.
"""
