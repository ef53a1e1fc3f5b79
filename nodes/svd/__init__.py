"""Stable Video Diffusion in torch: one file per model."""
