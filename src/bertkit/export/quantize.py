"""int8 quantisation of an exported graph, the search that keeps its worst case, and the accuracy gate.

Dynamic quantisation stores the MatMul weights as int8 (one scale per output channel) and quantises
activations on the fly with ONE scale per tensor. In BERT a few tokens ([CLS], [SEP], punctuation)
carry activations tens of times larger than the rest, so that one scale leaves ordinary tokens a
handful of int8 steps: on MiniLM weights alone in int8 keep a worst sentence cosine of 0.998 to fp32,
weights and per-tensor activations only 0.974. Two remedies, both measured on real text:
- per-token scaling (`per_token_scaling`): before each weight MatMul every token's activations are
  divided by their largest magnitude and the product multiplied back, so the tensor-wide scale becomes
  a per-token one (worst 0.988 on the same sentences, for a few cheap elementwise operators);
- a sensitivity search (`search_int8`): each weight MatMul is quantised alone and its damage to the
  worst calibration sentence measured; the most damaging per FLOP stay in fp32, one at a time, until
  the worst calibration cosine reaches the bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bertkit.errors import BertkitError

log = logging.getLogger("bertkit")

# A "point" of the main metric on the task's own scale: QA's F1 runs 0-100, the others 0-1.
POINT = {"qa": 1.0}
DEFAULT_POINT = 0.01


def _onnx():
    import onnx  # the `onnx` extra, imported when a graph is rewritten

    return onnx


def weight_matmuls(path: str | Path) -> dict[str, int]:
    """{node name: weight elements} of the MatMuls whose second input is a constant (the ones quantised)."""
    graph = _onnx().load(str(path), load_external_data=False).graph
    sizes = {i.name: int(np.prod(i.dims)) for i in graph.initializer}
    return {n.name: sizes[n.input[1]] for n in graph.node if n.op_type == "MatMul" and n.input[1] in sizes}


def per_token_scaling(src: str | Path, dst: str | Path) -> Path:
    """Rewrite every weight MatMul y = x W as y = ((x / r) W) * r, r = max |x| over each token's channels.

    Exact in fp32 (up to rounding); under dynamic int8 the activations x / r share one range per token,
    so the per-tensor scale the quantiser picks no longer flattens ordinary tokens against outliers.
    """
    onnx = _onnx()
    from onnx import helper, numpy_helper  # the `onnx` extra, as above

    model = onnx.load(str(src))
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1], np.int64), "per_token/axes"),
            numpy_helper.from_array(np.array(1e-6, np.float32), "per_token/eps"),
        ]
    )
    nodes = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        x, y, p = node.input[0], node.output[0], node.name
        nodes += [
            helper.make_node("Abs", [x], [f"{p}/abs"], name=f"{p}/abs"),
            helper.make_node("ReduceMax", [f"{p}/abs", "per_token/axes"], [f"{p}/max"], name=f"{p}/max", keepdims=1),
            helper.make_node("Add", [f"{p}/max", "per_token/eps"], [f"{p}/r"], name=f"{p}/r"),
            helper.make_node("Div", [x, f"{p}/r"], [f"{p}/scaled"], name=f"{p}/scaled"),
        ]
        node.input[0], node.output[0] = f"{p}/scaled", f"{p}/product"
        nodes += [node, helper.make_node("Mul", [f"{p}/product", f"{p}/r"], [y], name=f"{p}/rescale")]
    del graph.node[:]
    graph.node.extend(nodes)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 18)  # ReduceMax with axes as an input
    onnx.save(model, str(dst))
    return Path(dst)


def quantize_int8(
    src: str | Path, dst: str | Path, per_channel: bool = True, exclude: list[str] | tuple[str, ...] = ()
) -> Path:
    """model.onnx -> int8 MatMul weights, activations quantised at run time; `exclude`d MatMuls stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # the `onnx` extra

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs a line per tensor it leaves in float
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=["MatMul"],
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
        )
    finally:
        root.setLevel(level)
    return Path(dst)


def cosine_summary(cosines: np.ndarray) -> dict:
    """Mean, 1st and 5th percentiles and worst of per-example cosines, rounded for export.json."""
    c = np.asarray(cosines, dtype=np.float64)
    return {
        "examples": int(c.size),
        "mean": round(float(c.mean()), 5),
        "p5": round(float(np.percentile(c, 5)), 5),
        "p1": round(float(np.percentile(c, 1)), 5),
        "worst": round(float(c.min()), 5),
    }


def search_int8(src: str | Path, dst: str | Path, cosines: Callable[[Path], np.ndarray], min_cosine: float) -> dict:
    """Quantise `src` (a per-token-scaled graph) to `dst`, keeping the fewest weight MatMuls in fp32 for
    which the worst of `cosines(graph)` (per calibration example, against fp32) reaches `min_cosine`.

    Each MatMul is first quantised alone to rank them by damage per weight (its FLOPs); then they are
    moved to fp32 in that order, re-measuring the whole graph each time, until the bound is met. With
    every MatMul in fp32 the graph is fp32, so the search ends; the caller's held-out gate judges the result.
    """
    dst = Path(dst)
    sizes = weight_matmuls(src)
    quantize_int8(src, dst)
    worst = float(cosines(dst).min())
    record: dict = {"search_target": round(min_cosine, 6), "all_int8_worst": round(worst, 5), "kept_fp32": []}
    if worst >= min_cosine:
        log.info("int8: every MatMul quantised, worst calibration cosine %.4f >= %g", worst, min_cosine)
        return record
    damage = {}
    for name in sizes:
        quantize_int8(src, dst, exclude=[n for n in sizes if n != name])
        damage[name] = 1.0 - float(cosines(dst).min())
    order = sorted(sizes, key=lambda n: -damage[n] / sizes[n])
    kept: list[str] = []
    while worst < min_cosine and len(kept) < len(order):
        kept.append(order[len(kept)])
        quantize_int8(src, dst, exclude=kept)
        worst = float(cosines(dst).min())
        log.info("int8: %d MatMul(s) kept in fp32, worst calibration cosine %.4f", len(kept), worst)
    total = sum(sizes.values())
    record.update(
        kept_fp32=kept,
        fp32_weight_share=round(sum(sizes[n] for n in kept) / total, 4),
        damage={n: round(damage[n], 6) for n in order},
    )
    return record


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
