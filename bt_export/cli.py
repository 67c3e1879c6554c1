"""`bt-export`: a thin typer layer over `bt_export.export.export_checkpoint`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from .configs import valid_names
from .errors import BtExportError, ParityError

app = typer.Typer(add_completion=False, help="Export BridgeTower to validated ONNX graphs.")
console = Console(stderr=True, width=130)  # fixed width: the parity table stays readable in CI logs


@app.command()
def export(
    output: Path = typer.Option(..., "--output", "-o", help="Export directory (written atomically)."),
    checkpoint: str = typer.Option("tiny", "--checkpoint", "-c",
                                   help=f"Alias ({', '.join(valid_names())}), hub id, or local directory."),
    random_init: bool = typer.Option(False, "--random-init", help="Official architecture of the alias, random weights."),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="Tokenizer directory (tokenizer.json or vocab+merges)."),
    revision: str = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export directory."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Check parity against eager PyTorch."),
    parity_images: list[Path] = typer.Option(None, "--parity-images", help="Image files/dirs for parity (default: synthetic)."),
    opset: int = typer.Option(23, "--opset", help="ONNX opset (≥ 23 for the fused Attention variant)."),
):
    """Export CHECKPOINT's vision tower, text tower and cross-modal stack with its heads to OUTPUT."""
    from .export import export_checkpoint
    from .parity import parity_table

    try:
        result = export_checkpoint(checkpoint, output, random_init=random_init, tokenizer=tokenizer,
                                   revision=revision, overwrite=overwrite, validate=validate,
                                   parity_images=parity_images, opset=opset,
                                   log=lambda message: console.print(f"[dim]{message}[/dim]"))
    except ParityError as err:
        console.print(parity_table(err.args[1]))
        console.print(f"[red]error:[/red] {err.args[0]} (nothing was written to {output})")
        raise typer.Exit(1) from None
    except BtExportError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    if result.parity:
        console.print(parity_table(result.parity))
    heads = ", ".join(result.manifest["checkpoint"]["heads"]) or "none"
    console.print(f"exported {checkpoint} (heads: {heads}) to {result.output} in {result.seconds:.1f} s, "
                  f"{result.disk_bytes / 1e6:.1f} MB")
