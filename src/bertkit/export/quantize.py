"""int8 dynamic quantisation of an exported graph, and the accuracy gate that guards it.

Dynamic quantisation stores the MatMul weights as int8 (one scale per output channel, which keeps
BERT's few large-magnitude columns from flattening the rest) and quantises activations on the fly;
embeddings, LayerNorm and softmax stay float. No calibration data is needed, which is why it is the
usual first step for BERT on CPUs; the price is a small accuracy drop, measured by `accuracy_gate`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertkit.errors import BertkitError

log = logging.getLogger("bertkit")

# A "point" of the main metric on the task's own scale: QA's F1 runs 0-100, the others 0-1.
POINT = {"qa": 1.0}
DEFAULT_POINT = 0.01


def quantize_int8(src: str | Path, dst: str | Path, per_channel: bool = True) -> Path:
    """model.onnx -> model.int8.onnx: int8 MatMul weights, float activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # the `onnx` extra

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantiser logs a line per tensor it leaves in float
    try:
        quantize_dynamic(
            str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=per_channel, weight_type=QuantType.QInt8
        )
    finally:
        root.setLevel(level)
    return Path(dst)


def check_drop(task_name: str, metric: str, before: float, after: float, max_drop: float, force: bool) -> dict:
    """The gate's record; a BertkitError when `metric` fell by more than `max_drop` points, unless `force`."""
    point = POINT.get(task_name, DEFAULT_POINT)
    drop = (before - after) / point  # in points
    report = {
        "metric": metric,
        "before": before,
        "after": after,
        "drop_points": round(drop, 4),
        "max_drop_points": max_drop,
        "passed": drop <= max_drop,
    }
    if drop > max_drop:
        message = (
            f"int8 quantisation lowers dev {metric} from {before:.4f} to {after:.4f}, a drop of "
            f"{drop:.2f} points (allowed: {max_drop:g}). Keep the fp32 model.onnx (omit --quantize), "
            "raise --max-drop, or pass --force to write model.int8.onnx anyway"
        )
        if not force:
            raise BertkitError(message)
        log.warning("%s; --force given: writing it anyway", message)
    return report
