"""The network and what it is saved as: `CharRNN` and its fast stepper, checkpoints,
quantized weights and exports."""
