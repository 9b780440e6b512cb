"""Benchmarks: each measures one path next to a baseline measured in the same run and prints the
ratio. Absolute rates drift about 30 % between runs on the same machine; ratios do not."""
