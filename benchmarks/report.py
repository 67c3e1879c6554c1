"""Benchmark report: JSON (everything, raw samples included), Markdown (the comparative table) and an optional
PNG plot (matplotlib, extra `bench`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

SCHEMA_VERSION = 1


def derive(rows, matmul_gflops: float) -> list[dict]:
    """Per row: throughput, ratio to eager `torch` in the same scenario/params, GFLOP/s and fraction of the
    machine's measured fp32 matmul rate."""
    baseline = {}
    for row in rows:
        if row.backend == "torch":
            baseline[(row.scenario, json.dumps(row.params, sort_keys=True))] = row.summary["p50_ms"]
    derived = []
    for row in rows:
        p50_s = row.summary["p50_ms"] / 1000
        torch_ms = baseline.get((row.scenario, json.dumps(row.params, sort_keys=True)))
        entry = asdict(row)
        entry["throughput_per_s"] = row.work / p50_s if p50_s else None
        entry["speedup_vs_torch"] = torch_ms / row.summary["p50_ms"] if torch_ms else None
        entry["gflops_per_s"] = row.flops / p50_s / 1e9 if row.flops else None
        entry["fraction_of_matmul_rate"] = (entry["gflops_per_s"] / matmul_gflops
                                            if entry["gflops_per_s"] and matmul_gflops else None)
        derived.append(entry)
    return derived


def build(rows, context: dict) -> dict:
    return {"schema_version": SCHEMA_VERSION, **context,
            "results": derive(rows, context["matmul_gflops"]["best_fp32"])}


def _fmt(value, pattern: str) -> str:
    return "–" if value is None else format(value, pattern)


def header(report: dict) -> list[str]:
    """Title, command, machine (CPU model, ISA flags, GPU), threads and versions: every report's first lines."""
    machine = report["machine"]
    rate = (f"Measured fp32 matmul rate (same run): {report['matmul_gflops']['best_fp32']:.0f} GFLOP/s; "
            if "matmul_gflops" in report else "")
    return [
        f"# bt-bench: {report['export']['checkpoint']}",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {machine['cpu']['model']}, {machine['cpu']['logical_cores']} logical cores, flags "
        f"{', '.join(machine['cpu']['flags']) or 'none'}; "
        f"GPU: {machine['gpu']['name'] if machine['gpu'] else 'none'}  ",
        f"{rate}threads: {report['threads']}  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items() if v)}  ",
    ] + [f"int8 recipe of {label}: {words}  " for label, words in report.get("int8_recipes", {}).items()] + (
        [f"Load average (1/5/15 min) at the start {report['load_average']}, at the end "
         f"{report.get('load_average_end')}{_shared(report)}  "] if report.get("load_average") else [])


def _shared(report: dict) -> str:
    busy = report["load_average"][0] > report["machine"]["cpu"]["logical_cores"]
    return " — the CPU was shared with other work (more runnable threads than cores)" if busy else ""


def markdown(report: dict) -> str:
    if report.get("scenario") == "accuracy":
        from .accuracy_report import markdown as accuracy_markdown

        return accuracy_markdown(report, header(report))
    settings = report["settings"]
    pause = f", {settings['settle_s'] * 1000:.0f} ms pause before each call" if settings.get("settle_s") else ""
    lines = header(report) + [
        f"Method: {settings['warmup']} warm-up + {settings['runs']} timed rounds per case, backends interleaved (a "
        f"seeded shuffle of the order each round){pause}; medians from per-iteration samples.",
        "",
        "| scenario | params | backend | p50 ms | p90 ms | p99 ms | throughput | × torch | GFLOP/s | of matmul rate |"
        " agrees with eager |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        params = ", ".join(f"{k}={v}" for k, v in {**r["params"], **r["extra"]}.items() if k != "note")
        agreement = r["agreement"]
        agrees = "–" if not agreement else ("yes" if agreement["passed"] else "**NO**") + " (" + ", ".join(
            f"{k} {v:.3g}" for k, v in agreement.items() if k not in ("passed",) and isinstance(v, float)) + ")"
        lines.append(
            f"| {r['scenario']} | {params} | {r['backend']} | {r['summary']['p50_ms']:.1f} "
            f"| {r['summary']['p90_ms']:.1f}"
            f" | {r['summary']['p99_ms']:.1f} | {_fmt(r['throughput_per_s'], '.2f')} {r['unit']}/s"
            f" | {_fmt(r['speedup_vs_torch'], '.2f')} | {_fmt(r['gflops_per_s'], '.0f')}"
            f" | {_fmt(r['fraction_of_matmul_rate'], '.0%')} | {agrees} |")
    lines += ["", "`of matmul rate`: achieved GFLOP/s (the matmul work each backend does in the scenario, from the "
              "config) "
              "over this machine's fp32 matmul rate measured in the same run; int8 work can exceed it (VNNI integer "
              "matmuls are not bound by the fp32 rate). `× torch`: eager p50 / backend p50, same scenario and params."]
    if report.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError("--plot needs matplotlib: pip install 'bt-toolkit[bench]'") from err
    results = report["results"]
    labels = [f"{r['scenario']} {' '.join(str(v) for k, v in r['params'].items() if k == 'batch_size')}".strip()
              for r in results]
    groups = list(dict.fromkeys(labels))
    backends = list(dict.fromkeys(r["backend"] for r in results))
    figure, axis = plt.subplots(figsize=(max(6, 1.4 * len(groups)), 4))
    width = 0.8 / len(backends)
    for index, backend in enumerate(backends):
        values = [next((r["summary"]["p50_ms"] for r, label in zip(results, labels, strict=True)
                        if label == group and r["backend"] == backend), 0) for group in groups]
        axis.bar([g + index * width for g in range(len(groups))], values, width, label=backend)
    axis.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=20, ha="right")
    axis.set_ylabel("p50 latency (ms, log)")
    axis.set_yscale("log")
    axis.legend()
    axis.set_title(report["export"]["checkpoint"])
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def rederive(report: dict) -> dict:
    """Recompute the derived columns of a stored report (e.g. after correcting a row's work)."""
    if report.get("scenario") == "accuracy":
        return report  # no derived columns
    from .scenarios import Row

    fields = Row.__dataclass_fields__
    rows = [Row(**{k: v for k, v in r.items() if k in fields}) for r in report["results"]]
    return {**report, "results": derive(rows, report["matmul_gflops"]["best_fp32"])}


def main(argv: list[str] | None = None) -> int:
    """python3 -m benchmarks.report REPORT.json [--markdown OUT.md] [--plot OUT.png]: render a stored report."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("json_path", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    report = rederive(json.loads(args.json_path.read_text()))
    write(report, None, args.markdown, args.plot)
    if not args.markdown:
        print(markdown(report))
    return 0


def write(report: dict, json_path: Path | None, markdown_path: Path | None, plot_path: Path | None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    if markdown_path:
        Path(markdown_path).write_text(markdown(report))
    if plot_path:
        plot(report, Path(plot_path))


if __name__ == "__main__":
    raise SystemExit(main())
