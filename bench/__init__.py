"""natlab benchmarks (`make bench`): figures, never pass/fail tests."""
