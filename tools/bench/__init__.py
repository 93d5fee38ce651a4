"""The benchmark behind tools/benchmark.py: measurement, contenders, report."""
