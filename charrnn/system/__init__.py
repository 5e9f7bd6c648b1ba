"""The machine underneath: atomic file writes, the device and CPU threads, the CPUs' load."""
