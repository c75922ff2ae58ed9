"""bertkit export: a model directory -> ONNX (optionally int8), checked against PyTorch."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bertkit.config import option, parse_args, required
from bertkit.data.readers import read_texts
from bertkit.export import FORMATS, QUANTIZE, export_dir
from bertkit.fetch import resolve_data, resolve_model
from bertkit.outputs import check_output_dir, replaced_dir


@dataclass
class ExportConfig:
    model: str = required("model directory (plain or fine-tuned) or fetched name, e.g. minilm")
    output: str = required("directory for model.onnx, the tokenizer files and export.json")
    format: str = option("onnx", "what to export to", choices=FORMATS)
    quantize: str | None = option(None, "also write model.int8.onnx (dynamic int8 quantisation)", choices=QUANTIZE)
    calibration: str | None = option(
        None,
        "int8: real text like the model's input (data name or file; default: 1,000 MR dev sentences), half "
        "for the fp32-fallback search, half held out for the gate",
    )
    min_cosine: float = option(
        0.99,
        "int8: the worst cosine to fp32 allowed on a held-out calibration text (sentence vectors; task "
        "graphs: their outputs): plain int8 if it holds, else per-token scaling and MatMuls kept in fp32 "
        "until it holds. 0: plain int8, no bound",
        at_least=0,
        at_most=1,
    )
    dev: str | None = option(
        None,
        "fine-tuned models: dev data; with --quantize int8 the task metric is "
        "compared before and after, and a drop over --max-drop stops the export",
    )
    max_drop: float = option(
        1.0,
        "largest allowed drop of the dev metric, in points (0.01 accuracy/F1; "
        "1.0 for QA's 0-100 F1; negative: int8 must improve it)",
        at_least=-100,
        at_most=100,
    )
    force: bool = option(False, "write model.int8.onnx even when the dev metric drops too much")
    overwrite: bool = option(
        False,
        "replace --output when it already holds files (swapped in only once the new export has passed its checks)",
    )


def main(argv: list[str]) -> int:
    cfg = parse_args(ExportConfig, argv, prog="bertkit export")
    model_dir = resolve_model(cfg.model)
    inputs = [model_dir] + ([resolve_data(cfg.dev, "dev")] if cfg.dev else [])
    calibration = None
    if cfg.calibration is not None:
        source = resolve_data(cfg.calibration, "train")
        inputs.append(source)
        calibration = read_texts(source)  # bad input stops here, before any export
    out = check_output_dir(cfg.output, inputs, cfg.overwrite)
    with replaced_dir(out) as tmp:  # a failed or refused export leaves --output as it was
        report = export_dir(
            model_dir, tmp, cfg.format, cfg.quantize, cfg.dev, cfg.force, cfg.max_drop, calibration, cfg.min_cosine
        )
    print(json.dumps(report, indent=2))
    return 0
