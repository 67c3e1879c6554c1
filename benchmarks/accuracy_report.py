"""Markdown of an accuracy report (benchmarks.accuracy_run): per split, ITM against hard negatives, retrieval,
MLM and agreement with eager fp32, then issue 20's bars."""

from __future__ import annotations

from bt_export.shapes.data import NEGATIVE_KINDS

CATEGORIES = ("count", "size", "colour", "shape", "position", "relation")
DEFINITIONS = (
    "ITM accuracy: the image's true caption gets a higher match probability than the one-attribute hard negative "
    "(p_true > p_negative). Retrieval relevance: same canonical scene; recall@1/5/10 over the first `queries` "
    "captions (t→i, against every gallery image) and images (i→t, against every gallery caption). Brute force: ITM "
    "on every pair; ITC: cosine only; two-stage: ITC shortlist of k reranked by ITM (t→i through each backend's "
    "`retrieve` with a prebuilt index, timed per query). MLM top-1: the most likely token at one masked attribute "
    "word per caption equals the word. Differs from eager: fraction of decisions unlike eager fp32's (ITM p > 0.5 "
    "on every scored pair; true-vs-negative comparisons; retrieval top-1; MLM top-1 token). Eager scores pairs with "
    "the HF classes on batches of pairs, images preprocessed once (brute-force matrices: the export's "
    "decomposition of the same HF modules, bt_export.towers, each tower once per input); its times are not a "
    "serving path. ITM ms / pair: the hard-negative pairs, each pair through both towers.")


def _f(value, pattern: str = ".3f") -> str:
    return "–" if value is None else format(value, pattern)


def _recalls(section: dict | None) -> str:
    if not section:
        return "–"
    return "/".join(_f(v, ".2f") for v in section.values())


def _split(name: str, split: dict, seed: int) -> list[str]:
    results = split["results"]
    lines = [f"## {name}: seed {seed}, gallery {split['gallery']}, {split['queries']} queries, "
             f"{split['negatives']} hard negatives, {split['masked']} masked words", "",
             "ITM accuracy against one-attribute hard negatives:", "",
             "| backend | overall | " + " | ".join(NEGATIVE_KINDS) + " | ms / pair |",
             "|---|---" + "|---" * len(NEGATIVE_KINDS) + "|---|"]
    for label, r in results.items():
        if "itm" in r:
            kinds = r["itm"]["per_kind"]
            lines.append(f"| {label} | {_f(r['itm']['overall'])} | "
                         + " | ".join(_f(kinds.get(k)) for k in NEGATIVE_KINDS)
                         + f" | {_f(r['timing_s'].get('itm_ms_per_pair'), '.2f')} |")
    k = next((r["two_stage"]["k"] for r in results.values() if "two_stage" in r), "k")
    lines += ["", f"Retrieval, recall@1/5/10 (two-stage: ITC shortlist of {k} → ITM rerank):", "",
              "| backend | t→i brute-force ITM | i→t brute-force ITM | t→i ITC | i→t ITC | t→i two-stage | "
              "i→t two-stage | brute force ms/query | two-stage ms/query (p50) | index s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        if "brute_force" not in r and "itc" not in r:
            continue
        brute, itc, two = r.get("brute_force", {}), r.get("itc", {}), r.get("two_stage", {})
        lines.append(f"| {label} | {_recalls(brute.get('t2i'))} | {_recalls(brute.get('i2t'))} | "
                     f"{_recalls(itc.get('t2i'))} | {_recalls(itc.get('i2t'))} | {_recalls(two.get('t2i'))} | "
                     f"{_recalls(two.get('i2t'))} | {_f(brute.get('t2i_ms_per_query'), '.1f')} | "
                     f"{_f(two.get('t2i_ms_per_query_p50'), '.1f')} | {_f(two.get('index_s'), '.2f')} |")
    lines += ["", "MLM top-1 on masked attribute words, and fractions of decisions that differ from eager fp32:", "",
              "| backend | MLM top-1 | " + " | ".join(CATEGORIES) + " | ≠ eager: ITM decisions | ITM comparisons | "
              "retrieval top-1 | MLM top-1 |",
              "|---|---" + "|---" * len(CATEGORIES) + "|---|---|---|---|"]
    for label, r in results.items():
        mlm, differs = r.get("mlm"), r.get("differs_from_eager", {})
        per = mlm["per_category"] if mlm else {}
        lines.append(f"| {label} | {_f(mlm['top1'] if mlm else None)} | "
                     + " | ".join(_f(per.get(c)) for c in CATEGORIES)
                     + "".join(f" | {_f(differs.get(m), '.2%')}" for m in
                               ("itm_decisions", "itm_comparisons", "retrieval_top1", "mlm_top1")) + " |")
    if split["bars"]:
        lines += ["", "Issue 20's bars:", ""]
        lines += [f"- {'holds' if b['passed'] else '**does not hold**'}: {b['bar']} ({b['value']})"
                  for b in split["bars"]]
    return lines + [""]


def markdown(report: dict, header: list[str]) -> str:
    settings = report["settings"]
    lines = header + [f"Method: task accuracy on generated shapes scenes (bt_export.shapes.data), every backend on "
                      f"the same samples in one run; {settings['pair_batch']} pairs per cross-modal call; eager on "
                      f"{settings.get('torch_threads', 'default')} torch thread(s).", ""]
    titles = {"heldout": "Held-out", "heldout_combos": "Held-out attribute combinations (never trained on)"}
    for name, split in report["splits"].items():
        lines += _split(titles.get(name, name), split, settings["seed"])
    lines += ["Definitions: " + DEFINITIONS]
    if report.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"
