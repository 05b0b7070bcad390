"""Training: config dataclasses, losses and discriminator, the step, checkpoints, validation,
and the Accelerate trainer."""
