"""Verification: certified lower bounds on minimal adversarial distortion (`bounds`) for the
suite's sequential ReLU networks written as affine maps and ReLUs (`network`)."""
