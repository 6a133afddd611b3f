"""Audio I/O and signal processing."""
