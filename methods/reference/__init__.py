"""Reference rows every leaderboard needs: the fp32 baseline, a half-precision cast, and
PyTorch's own dynamic int8 quantization as one real, simple method."""
from slimbench.methods.reference import baseline, dynamic_int8, half  # noqa: F401
