"""What the published-study reproductions share: the embedded Fashion-MNIST splits and the
common set-up (setup), the top-1 loop over an executor (top1), the report writers (writers),
the accumulated-deviation study (deviation) and `reproduce all` (all). Each scheme's own
study and calibration live in its package (schemes/<name>/study.py, calibration.py) and are
declared to the CLI as StudySpec / CalibrationSpec (schemes/entry.py)."""
