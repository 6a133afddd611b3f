"""Renders the plans of ``benchmarks/sharding_plans.sh`` (``docs/results/sharding/*.jsonl``) into docs/sharding.md:
every ``<!-- plan:NAME -->`` ... ``<!-- /plan:NAME -->`` region is replaced by the tables of NAME.jsonl, and the
generation-length curve is drawn to docs/benchmarks/generation_length.png.

  python benchmarks/sharding_report.py [--doc docs/sharding.md] [--results docs/results/sharding]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

GiB = 2 ** 30


def _gib(value) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def _tflop(value) -> str:
    return "-" if value is None else f"{value / 1e12:.2f}"


def _ms(value) -> str:
    return "-" if value is None else f"{value * 1e3:.1f}"


def find_section(found: dict) -> str:
    """The fastest fitting strategy and every candidate the planner screened."""
    target = found["target"] or {}
    lines = []
    best = found.get("best")
    if best is None:
        lines.append(f"**Nothing fits** {target.get('name', 'any slice tried')}.")
    else:
        s, m = best["strategy"], best["memory"]
        analytic = "analytic FLOPs" in best.get("cost_method", "")  # a GPU bound at peak says nothing of MFU
        mfu = f", MFU at the bound {best['mfu_at_bound']:.0%}" if best.get("mfu_at_bound") and not analytic else ""
        lines.append(f"**Fastest that fits {best['target']['name']}** ({best['devices']} x {best['device_kind']}, "
                     f"{best['target']['hbm_bytes'] / GiB:.0f} GiB each): `{s['name']}` — global batch "
                     f"{s['global_batch']}, {_gib(m['total'])} GiB per device (compiled), bound "
                     f"{_ms(best['bound_seconds'])} ms per step = "
                     f"{s['global_batch'] / best['bound_seconds']:.1f} examples/s{mfu}.")
    for tried in found.get("tried", []):
        lines.append(f"- {tried['target']}: {'fits' if tried['fits'] else 'does not fit'} "
                     f"({_gib(tried.get('memory_estimate'))} GiB per device estimated, {tried.get('strategy', '')})")
    lines += ["", "| strategy | global batch | memory / device, estimate (GiB) | compiled (GiB) | fits | bound "
              "(ms / step) | examples / s at bound |", "|---|---|---|---|---|---|---|"]
    for c in found.get("screened", []):
        s = c["strategy"]
        compiled = c.get("compiled", c.get("confirmed"))  # files written before 2026-12-02 12:00 say "confirmed"
        if compiled and c.get("memory") is None and best and best["strategy"]["name"] == s["name"]:
            c = dict(c, memory=best["memory"]["total"], fits=best["fits"])
        c = dict(c, compiled=compiled)
        fits = c["fits"] if c.get("compiled") else c["fits_estimate"]
        rate = "-" if not c["bound_seconds"] else f"{s['global_batch'] / c['bound_seconds']:.1f}"
        note = "" if c.get("compiled") else " (estimate)"
        lines.append(f"| {s['name']} | {s['global_batch']} | {_gib(c['memory_estimate'])} | {_gib(c.get('memory'))} "
                     f"| {'yes' if fits else '**no**'}{note if fits is not None else ''} | {_ms(c['bound_seconds'])} "
                     f"| {rate} |")
    return "\n".join(lines) + "\n"


def generation_seconds(row: dict) -> float:
    """A generate row's bound: sampling then decode, in sequence (rows written before bench/generation.py summed
    the phases stored a roofline of their pooled counts, which hid a compute-bound decode under the sampling)."""
    parts = row.get("bound_parts") or {}
    return row["bound_seconds"] if None in parts.values() or not parts else sum(parts.values())


def rows_section(rows: list[dict]) -> str:
    """Rows of ``bench sharding`` (train or generate) without --find."""
    if rows and rows[0]["workload"] == "generate":
        lines = ["| strategy | audio (s) | clips | memory / device (GiB): sampler, decode chunk | fits | TFLOP / device "
                 "| bound (s): sampling + decode (chunks) = **total** = latency | clips / s at the bound |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            parts, bounds = r["memory"]["parts"], r.get("bound_parts") or {}
            clips = r["strategy"]["global_batch"]
            split = (f"{bounds['sampling']:.3f} + {bounds['decode']:.3f} ({r['decode_chunks']}) = "
                     if bounds.get("sampling") is not None else "")
            lines.append(f"| {r['strategy']['name']} | {r['audio_seconds']:.1f} | {clips} | "
                         f"{_gib(parts['sampler']['total'])}, {_gib(parts['decode_chunk']['total'])} | "
                         f"{'yes' if r['fits'] else '**no**'} | {_tflop(r['cost']['flops'])} | "
                         f"{split}**{generation_seconds(r):.3f}** | "
                         f"{clips / generation_seconds(r):.1f} |")
        return "\n".join(lines) + "\n"
    from stableaudio_jax.bench.sharding import markdown
    return markdown(rows)


def length_plot(rows: list[dict], path: str) -> None:
    from matplotlib.figure import Figure
    rows = sorted(rows, key=lambda r: r["audio_seconds"])
    seconds = [r["audio_seconds"] for r in rows]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    ax.plot(seconds, [generation_seconds(r) for r in rows], "o-", label="whole generation (bound)")
    if all((r.get("bound_parts") or {}).get("sampling") is not None for r in rows):
        ax.plot(seconds, [r["bound_parts"]["sampling"] for r in rows], "s--", label="sampling (DiT steps)")
        ax.plot(seconds, [r["bound_parts"]["decode"] for r in rows], "^--", label="VAE decode")
    peak = rows[0]["target"].get("peak_flops")
    if peak:  # the compiled FLOPs alone at peak: exact counts, no HBM-traffic term
        ax.plot(seconds, [r["cost"]["flops"] / peak for r in rows], "x-.", label="compute alone (FLOPs at peak)")
    ax.plot(seconds, [generation_seconds(rows[0]) * s / seconds[0] for s in seconds], ":", color="gray",
            label="linear in length (from the shortest)")
    ax.set(xlabel="seconds of audio", ylabel="seconds (compiler's bound)",
           title=f"{rows[0]['steps']} steps with CFG + decode, {rows[0]['target']['name']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)


def render(doc: str, results: str) -> str:
    text = open(doc, encoding="utf-8").read()
    for name in re.findall(r"<!-- plan:([\w.\-]+) -->", text):
        path = os.path.join(results, f"{name}.jsonl")
        if not os.path.exists(path):
            print(f"{path}: missing, region left as it is", file=sys.stderr)
            continue
        records = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
        body = find_section(records[-1]) if "screened" in records[-1] else rows_section(records)
        if records and records[0].get("workload") == "generate" and "length" in name:
            length_plot(records, os.path.join(os.path.dirname(doc), "benchmarks", "generation_length.png"))
        text = re.sub(rf"(<!-- plan:{re.escape(name)} -->\n).*?(<!-- /plan:{re.escape(name)} -->)",
                      lambda m: m.group(1) + body + m.group(2), text, flags=re.S)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doc", default="docs/sharding.md")
    parser.add_argument("--results", default="docs/results/sharding")
    args = parser.parse_args()
    text = render(args.doc, args.results)
    with open(args.doc, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
