"""Verification: certified lower bounds on minimal adversarial distortion (`bounds`) and exact
minimal distortions (`exact`) for the suite's networks written as affine maps, ReLUs and instance
norms (`network`); the manifest's kinds (`kinds`)."""
