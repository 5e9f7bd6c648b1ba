"""The machine underneath: atomic file writes, file digests, the device and CPU threads, the
CPUs' load."""
