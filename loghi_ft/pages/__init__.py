"""From PAGE XML and ALTO to line strips and list files: documents, cutting, list files, caches (no torch)."""
