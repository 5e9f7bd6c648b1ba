"""Training: one plan and one executor for every way a run starts (`plan`), the loop (`Trainer`),
its objectives (plain, distillation), `--auto` sizing and data-parallel training under torchrun."""
