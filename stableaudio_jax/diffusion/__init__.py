"""Diffusion objectives, noise schedules and samplers (pure functions; the whole sampling loop is one lax.scan)."""
