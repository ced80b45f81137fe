"""The line recogniser: VGSL modules, codec and CTC decoding, model folders, pixels, what changes a model,
the recognisers that run it (torch, ONNX), and the import from Loghi."""
