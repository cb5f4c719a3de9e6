"""Tools every method family shares, so no family reaches into another.

Torch-free: `options` (skip patterns, divisibility checks, field help) and `swap`
(`LayerSwapMethod`, the base of layer-replacing methods). With torch, loaded when a method runs:
`layers` (select, swap and cost layers), `calibrate` (calibration pass, BatchNorm re-estimation),
`cast` (compute dtype), `storage` (bit packing, bitmask / CSR / N:M sparse formats) and
`resize` (fit a freshly built model to saved tensors of other shapes).
"""
