"""The simulator core: the hardware description and the one-way pipeline below the schemes.

config (the hardware tree) -> frontend (trace, fold, quantize) -> mapping (weights -> arrays,
OU groups) -> engine (bit-serial OU execution, ADC and device model) -> cost (events ->
energy, latency, area); events (the counts), intconv (exact integer convolutions), errors,
io (atomic writes) and runtime (process-wide state). Nothing here imports a scheme, a
study, the training code or the app.
"""
