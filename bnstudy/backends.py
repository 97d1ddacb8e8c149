"""How a run uses its device: the one place that sets torch's backend flags, and the record of them in meta.json.

The policy (each choice a field of `BackendConfig`, changed with `--set backend.KEY=VALUE`):

- **float32 everywhere, TF32 off** (`tf32 = false`). TF32 rounds the inputs of convolutions and matmuls to a
  10-bit mantissa (relative error about 5e-4 per product; PyTorch's default lets cuDNN convolutions use it).
  The probes measure differences of gradients: ‖G − G′‖ for ICS, ‖∇L(w − ηg) − g‖ at η as small as LR/2 for
  gradient predictiveness. Those differences must not sit in rounding noise, so training and every probe
  run in full float32, on a GPU as on a CPU, and a CUDA run's numbers agree with a CPU run's to float32
  precision. `tf32 = true` is there for speed; `make bench` measures what it buys.
- **cuDNN autotuning on** (`cudnn_benchmark = true`): every convolution of a run has one shape, so cuDNN
  times its algorithms once and keeps the fastest. Autotuning may pick a different algorithm in another
  process (a resumed run), whose float sums differ in the last bits: deterministic mode turns it off.
- **NCHW** (`channels_last = false`): NHWC can be faster for tensor-core convolutions, which TF32 off does
  not use for float32; it is an option, and `make bench` measures it on CUDA.
- **No torch.compile** for training runs: Inductor draws random numbers with its own generator, so the
  noisy arm's step would no longer draw the noise its probes drew (the probes see the step's own noise),
  and the activation recorder's hooks would break the graph. `make bench` measures what it would gain
  for the plain step.
- **Deterministic mode off** (`deterministic = false`). On: `torch.use_deterministic_algorithms(True)`
  (an op without a deterministic CUDA kernel raises instead of running), cuDNN deterministic, autotuning
  off, and `CUBLAS_WORKSPACE_CONFIG=:4096:8`. A CUDA run then repeats and resumes bit for bit, as CPU runs
  always do; `make bench` prints what it costs. Off, a resumed CUDA run agrees with an uninterrupted one
  within `CUDA_RTOL` (tests/test_cuda.py).

Flags are set for the duration of one run and restored after it (`backend_policy`), never at import.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from bnstudy.config import BackendConfig

# How far two float32 runs of one configuration may drift apart on different kernels (a GPU against the CPU,
# NCHW against channels_last, a resumed CUDA run against an uninterrupted one): relative, per logged loss of
# a smoke run at LR 1e-6 (tests/test_cuda.py). Measured on the CPU, NCHW against channels_last: 2.4e-6 on the
# real CIFAR-10, 1.6e-6 on the synthetic set. Why so small an LR: with BN, float32 weight gradients from two
# correct kernels differ by about 4e-3 relative (BN's backward subtracts nearly equal terms), so at training
# LRs (0.1, 1e-3, and on the synthetic set even 1e-4) two runs separate to percent-level losses within a few
# steps, on any device; at 1e-6 the comparison holds the pipeline (data, order, forward, step, records) equal.
CUDA_RTOL = 1e-4


def _precision_api() -> bool:
    """torch >= 2.9 sets TF32 by fp32_precision; older versions by allow_tf32 (mixing the two is an error)."""
    return hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def _tf32_flags() -> tuple:
    if _precision_api():
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_tf32_flags(matmul, conv) -> None:
    if _precision_api():
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = matmul, conv
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv


def _set_tf32(on: bool) -> None:
    flag = ("tf32" if on else "ieee") if _precision_api() else on
    _set_tf32_flags(flag, flag)


def tf32_enabled() -> bool:
    return all(flag in (True, "tf32") for flag in _tf32_flags())


def _snapshot() -> tuple:
    return (_tf32_flags(), torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())


def _restore(saved: tuple) -> None:
    tf32, benchmark, cudnn_deterministic, deterministic, warn_only = saved
    _set_tf32_flags(*tf32)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, cudnn_deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def apply(config: BackendConfig) -> None:
    """Set torch's flags as `config` says (see the module's docstring for why each is what it is)."""
    _set_tf32(config.tf32)
    torch.backends.cudnn.benchmark = config.cudnn_benchmark and not config.deterministic
    torch.backends.cudnn.deterministic = config.deterministic
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable matmuls
    torch.use_deterministic_algorithms(config.deterministic)


def describe(config: BackendConfig, device: torch.device) -> dict:
    """What meta.json records: the flags as torch reports them once set, and the device's precision."""
    record = {"dtype": "float32", "deterministic": torch.are_deterministic_algorithms_enabled(),
              "channels_last": config.channels_last, "compile": False}
    if device.type == "cuda":
        record |= {"tf32": tf32_enabled(), "cudnn_benchmark": torch.backends.cudnn.benchmark,
                   "cudnn_deterministic": torch.backends.cudnn.deterministic,
                   "cudnn": torch.backends.cudnn.version(), "cuda": torch.version.cuda,
                   "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    return record


@contextmanager
def backend_policy(config: BackendConfig, device: torch.device):
    """The flags of `config` while one run trains (yields what meta.json records); the previous flags after."""
    saved = _snapshot()
    try:
        apply(config)
        yield describe(config, device)
    finally:
        _restore(saved)


def memory_format(config: BackendConfig) -> torch.memory_format:
    return torch.channels_last if config.channels_last else torch.contiguous_format
