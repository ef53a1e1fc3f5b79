"""The Stable Diffusion image family (SD 1.x, SD 2.x, SDXL): UNet, text encoders, tokenizer, loading."""
