"""The benchmark: suites of stitching cells, their runner and results store, leaderboards and plots."""
