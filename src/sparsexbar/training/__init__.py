"""Models and data: data sets (data), the model zoo (zoo), checkpoints and the shipped models
(checkpoint, models), training and fine-tuning (train), pruning (prune). Imports only core."""
