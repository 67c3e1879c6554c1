"""`bt-export`: a thin typer layer over `bt_export.export.export_checkpoint`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from .configs import valid_names
from .errors import BtExportError, ParityError, VariantsRejected

INT8_EXCLUDED_HELP = "the measured default in bt_export/precision.py"
# Exit codes (docs/errors.md): 0 written; 1 fp32 parity failed, nothing written; 2 bad input, nothing written;
# 3 written, but reduced-precision variant(s) missed their bounds and were left out (recorded in the manifest).
EXIT_PARITY, EXIT_INPUT, EXIT_REJECTED = 1, 2, 3

app = typer.Typer(add_completion=False, help="Export BridgeTower to validated ONNX graphs.")
console = Console(stderr=True, width=130)  # fixed width: the parity table stays readable in CI logs


@app.command()
def export(
    output: Path = typer.Option(..., "--output", "-o", help="Export directory (written atomically)."),
    checkpoint: str = typer.Option("tiny", "--checkpoint", "-c",
                                   help=f"Alias ({', '.join(valid_names())}), hub id, or local directory."),
    random_init: bool = typer.Option(False, "--random-init",
                                     help="Official architecture of the alias, random weights."),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="Tokenizer directory (tokenizer.json or vocab+merges)."),
    revision: str = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export directory."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Check parity against eager PyTorch."),
    parity_images: list[Path] = typer.Option(None, "--parity-images",
                                             help="Image files/dirs for parity (default: synthetic)."),
    opset: int = typer.Option(23, "--opset", help="ONNX opset (≥ 23 for fused attention)."),
    attention: str = typer.Option("onnx", "--attention",
                                  help="onnx: ONNX Attention (portable, fastest here); ort: com.microsoft "
                                       "MultiHeadAttention; none: unfused MatMul/Softmax."),
    precision: str = typer.Option("fp32", "--precision", help="Comma list of fp32, fp16, int8."),
    int8_exclude: list[str] = typer.Option(None, "--int8-exclude",
                                           help="Regex over '<graph>/<module path>' kept float32 in int8 (repeat; "
                                                f"replaces {INT8_EXCLUDED_HELP})."),
    int8_search: bool = typer.Option(False, "--int8-search",
                                      help="Choose the int8 blocks by measurement on the parity pairs: each "
                                           "block's sensitivity, then the largest set within every int8 bound."),
    trt_check: bool = typer.Option(False, "--trt-check", help="TensorRT compatibility lint, no TensorRT needed "
                                                              "(engines: `bt-run build-engines`)."),
    trt_only: bool = typer.Option(False, "--trt-only", help="Skip exporting: --trt-check an existing --output."),
):
    """Export CHECKPOINT's vision tower, text tower and cross-modal stack with its heads to OUTPUT."""
    from bt_runtime.errors import USER_FACING

    from .export import export_checkpoint
    from .parity import parity_table
    from .precision import INT8_EXCLUDED

    if trt_only:
        _trt_lint(output)
        return
    try:
        result = export_checkpoint(checkpoint, output, random_init=random_init, tokenizer=tokenizer,
                                   revision=revision, overwrite=overwrite, validate=validate,
                                   parity_images=parity_images, opset=opset, attention=attention,
                                   precisions=tuple(p.strip() for p in precision.split(",") if p.strip()),
                                   int8_excluded=tuple(int8_exclude) if int8_exclude else INT8_EXCLUDED,
                                   int8_search=int8_search, log=lambda message: console.print(f"[dim]{message}[/dim]"))
    except ParityError as err:
        for name, rows in err.rows.items():
            console.print(parity_table(rows, f"{name} parity against eager PyTorch"))
        console.print(f"[red]error:[/red] {escape(err.message)} (nothing was written to {output})")
        raise typer.Exit(EXIT_PARITY) from None
    except VariantsRejected as err:
        result = err.result
        _report(checkpoint, result, parity_table)
        console.print(f"[red]error:[/red] {escape(err.message)}")
        raise typer.Exit(EXIT_REJECTED) from None
    except (BtExportError, *USER_FACING) as err:
        console.print(f"[red]error:[/red] {escape(str(err))} (nothing was written to {output})")
        raise typer.Exit(EXIT_INPUT) from None
    except Exception:
        console.print("[red]internal error[/red] (a bug in bt-export, not in your input: please report it with the "
                      f"traceback below); nothing was written to {output}")
        raise
    _report(checkpoint, result, parity_table)
    if trt_check:
        _trt_lint(output)


def _report(checkpoint: str, result, parity_table) -> None:
    for name, rows in result.parity.items():
        if rows:
            console.print(parity_table(rows, f"{name} parity against eager PyTorch"))
    heads = ", ".join(result.manifest.heads) or "none"
    def fused(variant) -> int:
        return sum(c["Attention"] + c["MultiHeadAttention"] for c in variant.fused_attention_nodes.values())

    variants = ", ".join(f"{p} ({fused(v)} fused attention nodes in {len(v.fused_attention_nodes)} graphs)"
                         for p, v in result.manifest.variants.items())
    console.print(f"exported {checkpoint} (heads: {heads}; {variants}) to {result.output} in {result.seconds:.1f} s, "
                  f"{result.disk_bytes / 1e6:.1f} MB")


def _trt_lint(output: Path) -> None:
    """The TensorRT compatibility lint (needs onnx, so it lives with the exporter); engines are built by the one
    builder, `bt-run build-engines`, on the machine that runs them."""
    from bt_runtime.errors import USER_FACING

    from .trt_lint import TABLE_SOURCE, lint_export

    try:
        results = lint_export(output)
    except (BtExportError, *USER_FACING) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    portable_failures = 0
    for name, findings in results.items():
        state = "ok" if not findings else ("skipped" if name == "int8" else "[red]would fail[/red]")
        console.print(f"TensorRT lint {name}: {state}")
        for finding in findings:
            console.print(f"  {escape(str(finding))}")
        portable_failures += len(findings) if name != "int8" else 0
    console.print(f"[dim]checked against {TABLE_SOURCE}[/dim]")
    if portable_failures:
        raise typer.Exit(1)
