"""Scenarios, baselines, scorers, scorecard and benchmarks."""
