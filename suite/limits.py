"""Upper bounds on every count a manifest sets (epochs, steps, iterations, queries): far above any
study's need, low enough that `suite validate` rejects a typo such as `epochs = 2**70` before a run
starts. Samples and batch sizes are bounded in `suite.manifest`."""

MAX_EPOCHS = 10_000
MAX_STEPS = 1_000_000  # iterations of one attack or distillation loop, queries, schedule lengths
MAX_BINARY_STEPS = 100  # C&W's search over its constant
MAX_NETS = 1_000  # networks sampled per distillation iteration
MAX_RESTARTS = 100  # random restarts of a fixed-budget attack
MAX_L2_RADIUS = 28.0  # √784: the largest L2 distance between two 28 × 28 images in [0, 1]
MAX_L1_RADIUS = 784.0  # the largest L1 distance between two 28 × 28 images in [0, 1]
