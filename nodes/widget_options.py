"""Steps of the FLOAT widgets: in ComfyUI's frontend the step decides how many decimals a typed value keeps.

The frontend (checked in the bundles of 1.27 and 1.49, canvas and Vue nodes alike) derives a precision of
−floor(log10(step)) decimals from a FLOAT input's ``step``, rounds every typed value to it (``toFixed``) and shows
that many decimals; a ``round`` option can only round coarser, and ``round: False`` does not switch rounding off. So
a step of 1e-5 turns a typed learning rate of 3e-6 into 0. Each input below gets a step as fine as the values users
type for it; the server does no rounding of its own (it only checks min/max).
"""
FINE_STEP = 1e-8  # learning rate, β, clip range, ε2: small values, 8 decimals
ETA_STEP = 1e-4  # η: 4 decimals (√2 ≈ 1.4142 for Precise)
WEIGHT_STEP = 1e-4  # reward weights: rewards on different scales need small weights
SCALE_STEP = 0.01  # CFG scale, LoRA alpha
