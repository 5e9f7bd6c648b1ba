"""Training: the loop (`Trainer`), its objectives (plain, distillation), `--auto` sizing and
data-parallel training under torchrun."""
