"""Training and fine-tuning line recognisers: settings, data, checkpoints, the loop."""
