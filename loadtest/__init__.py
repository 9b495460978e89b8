"""Benchmarks of liveroom, each measured side by side with its raw limit in the same run.

Benchmarks are not tests: nothing here asserts on timing. Each benchmark prints its figures
and, with ``--write-md``, writes them with the command that reproduces them to
``docs/BENCHMARKS.md``.
"""
