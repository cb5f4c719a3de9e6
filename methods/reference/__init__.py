"""Reference rows every leaderboard needs: the fp32 baseline and a half-precision cast.
(PyTorch's own int8 rows, `torch.dynamic_int8` and `torch.static_int8`, are in the quantization family.)"""
from slimbench.methods.reference import baseline, half  # noqa: F401
