"""Benchmarks of sharding strategies: compiled memory, cost and collectives; measured step times."""
