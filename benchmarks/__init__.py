"""Benchmarks of what users feel, each measured side by side with a baseline in the same run.

Run ``python -m benchmarks`` from the project root (``--quick`` for a short run, ``--smoke`` to
check that each runs); see ``docs/benchmarks.md`` for what each figure means.
"""
