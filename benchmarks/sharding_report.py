"""Renders the plans of ``benchmarks/sharding_plans.sh`` (``docs/results/sharding/*.jsonl``) into the docs: every
``<!-- plan:NAME -->`` ... ``<!-- /plan:NAME -->`` region is replaced by the tables of NAME.jsonl, every
``<!-- finetune-memory -->`` ... ``<!-- /finetune-memory -->`` region by the fine-tune memory table (the L4 plans
``FINETUNE``, fitted against the usable memory of a 24 GB and an 80 GB card), and the generation-length curve is
drawn to docs/benchmarks/generation_length.png.

  python benchmarks/sharding_report.py [--doc docs/sharding.md --doc docs/fine_tuning.md] [--results ...]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

# this checkout's stableaudio_jax (the report formats rows with it), not an installed copy
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GiB = 2 ** 30


def _gib(value) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def _tflop(value) -> str:
    return "-" if value is None else f"{value / 1e12:.2f}"


def _ms(value) -> str:
    return "-" if value is None else f"{value * 1e3:.1f}"


OLD_MODEL = ("written before per-axis links: the roofline charges collectives to the chip's total link bandwidth "
             "and GPU rows count analytic FLOPs at peak without remat, a looser lower bound")


def _xla(seconds, known: bool) -> str:
    """XLA's lower bound: ms, "unknown" (negative on TPU), or "-" (none on this backend / not recorded)."""
    return _ms(seconds) if seconds is not None else ("unknown" if known else "-")


def _xla_recorded(row: dict | None) -> bool:
    """TPU rows costed with per-axis links record XLA's bound, or "unknown" where XLA returned a negative value."""
    return bool(row) and row["target"]["name"].startswith("tpu:") and "traffic" in row


def best_line(best: dict) -> str:
    """The fastest fitting strategy in one sentence, with both lower bounds and the MFU ceiling."""
    s, m = best["strategy"], best["memory"]
    known = _xla_recorded(best)
    mfu = f", MFU at best {best['mfu_at_bound']:.0%}" if best.get("mfu_at_bound") else ""
    return (f"**Fastest that fits {best['target']['name']}** ({best['devices']} x {best['device_kind']}, "
            f"{best['target']['hbm_bytes'] / GiB:.0f} GiB each): `{s['name']}` — global batch {s['global_batch']}, "
            f"{_gib(m['total'])} GiB per device (compiled); lower bounds per step: roofline "
            f"{_ms(best['bound_seconds'])} ms (at most {s['global_batch'] / best['bound_seconds']:.1f} examples/s), "
            f"XLA {_xla(best.get('xla_optimal_seconds'), known)}" + (" ms" if best.get("xla_optimal_seconds") else "")
            + f"{mfu}." + ("" if "traffic" in best else f" (A file {OLD_MODEL}.)"))


def find_section(found: dict) -> str:
    """The fastest fitting strategy and every candidate the planner screened."""
    target = found["target"] or {}
    best = found.get("best")
    lines = [best_line(best) if best else f"**Nothing fits** {target.get('name', 'any slice tried')}."]
    for tried in found.get("tried", []):
        lines.append(f"- {tried['target']}: {'fits' if tried['fits'] else 'does not fit'} "
                     f"({_gib(tried.get('memory_estimate'))} GiB per device estimated, {tried.get('strategy', '')})")
    lines += ["", "| strategy | global batch | memory / device, estimate (GiB) | compiled (GiB) | fits | roofline lower "
              "bound (ms / step) | XLA lower bound (ms / step) | examples / s at best |", "|---" * 8 + "|"]
    for c in found.get("screened", []):
        s = c["strategy"]
        compiled = c.get("compiled", c.get("confirmed"))  # files written before 2026-12-02 12:00 say "confirmed"
        if compiled and best and best["strategy"]["name"] == s["name"]:
            c = dict(c, memory=best["memory"]["total"], fits=best["fits"], bound_seconds=best["bound_seconds"],
                     xla_optimal_seconds=best.get("xla_optimal_seconds"))
        c = dict(c, compiled=compiled)
        fits = c["fits"] if c.get("compiled") else c["fits_estimate"]
        rate = "-" if not c["bound_seconds"] else f"{s['global_batch'] / c['bound_seconds']:.1f}"
        note = "" if c.get("compiled") else " (estimate)"
        xla = _xla(c.get("xla_optimal_seconds"), _xla_recorded(best))
        lines.append(f"| {s['name']} | {s['global_batch']} | {_gib(c['memory_estimate'])} | {_gib(c.get('memory'))} "
                     f"| {'yes' if fits else '**no**'}{note if fits is not None else ''} | {_ms(c['bound_seconds'])} "
                     f"| {xla} | {rate} |")
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
                 "| roofline lower bound (s): sampling + decode (chunks) = **total** = latency | clips / s at best |",
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
        return "\n".join(lines) + "\n" + old_model_note(rows)
    from stableaudio_jax.bench.sharding import markdown
    return markdown(rows) + old_model_note(rows)


def old_model_note(rows: list[dict]) -> str:
    """A line under a table whose rows were written before the per-axis link model (no ``traffic``)."""
    return "" if all("traffic" in r for r in rows) else f"\n*Rows {OLD_MODEL}.*\n"


def length_plot(rows: list[dict], path: str) -> None:
    from matplotlib.figure import Figure
    rows = sorted(rows, key=lambda r: r["audio_seconds"])
    seconds = [r["audio_seconds"] for r in rows]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    ax.plot(seconds, [generation_seconds(r) for r in rows], "o-", label="whole generation (roofline lower bound)")
    if all((r.get("bound_parts") or {}).get("sampling") is not None for r in rows):
        ax.plot(seconds, [r["bound_parts"]["sampling"] for r in rows], "s--", label="sampling (DiT steps)")
        ax.plot(seconds, [r["bound_parts"]["decode"] for r in rows], "^--", label="VAE decode")
    peak = rows[0]["target"].get("peak_flops")
    if peak:  # the compiled FLOPs alone at peak: exact counts, no HBM-traffic term
        ax.plot(seconds, [r["cost"]["flops"] / peak for r in rows], "x-.", label="compute alone (FLOPs at peak)")
    ax.plot(seconds, [generation_seconds(rows[0]) * s / seconds[0] for s in seconds], ":", color="gray",
            label="linear in length (from the shortest)")
    ax.set(xlabel="seconds of audio", ylabel="seconds (roofline lower bound)",
           title=f"{rows[0]['steps']} steps with CFG + decode, {rows[0]['target']['name']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)


# the fine-tune memory plans, in table order, with what each row trains
FINETUNE = {"sao_finetune_ema_device_l4x1": "full, EMA on device", "sao_finetune_ema_host_l4x1": "full, EMA in host memory",
            "sao_finetune_ema_off_l4x1": "full, no EMA", "sao_lora16_l4x1": "LoRA rank 16 (attention)",
            "sao_lora64_l4x1": "LoRA rank 64 (attention)"}
JAX_DEFAULT_FRACTION = 0.75  # XLA_PYTHON_CLIENT_MEM_FRACTION's default: JAX preallocates 75 % of the card


def usable(chip) -> int:
    """Per-device bytes a program may use on ``chip``: the driver's figure less the runtime reserve."""
    return chip.hbm_bytes - chip.runtime_reserve_bytes


def _yes(fits: bool) -> str:
    return "yes" if fits else "**no**"


def finetune_table(results: str) -> str:
    """The fine-tune memory table: every row of the ``FINETUNE`` plans (batch 1 and the recommended 8), with
    whether it fits 24 GB under JAX's default 75 % preallocation, 24 GB with the allocator given all but the
    runtime reserve, and 80 GB likewise."""
    from stableaudio_jax.parallel.hardware import GPU_CHIPS
    l4, h100 = GPU_CHIPS["l4"], GPU_CHIPS["h100"]
    default = JAX_DEFAULT_FRACTION * l4.hbm_bytes
    lines = [f"| training | batch | remat | AdamW 1st moment | arguments (GiB) | temporaries (GiB) | **device total "
             f"(GiB)** | host memory (GiB) | 24 GB, JAX default ({_gib(default)}) | 24 GB, all but the reserve "
             f"({_gib(usable(l4))}) | 80 GB ({_gib(usable(h100))}) |", "|---" * 11 + "|"]
    for name, label in FINETUNE.items():
        path = os.path.join(results, f"{name}.jsonl")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: run benchmarks/sharding_plans.sh {name}")
        for row in (json.loads(line) for line in open(path, encoding="utf-8") if line.strip()):
            s, m = row["strategy"], row["memory"]
            lines.append(f"| {label} | {s['global_batch']} | {s['remat']} | {s['opt_dtype'] or 'float32'} "
                         f"| {_gib(m['arguments'])} | {_gib(m['temporaries'])} | **{_gib(m['total'])}** "
                         f"| {_gib(m.get('host', 0))} | {_yes(m['total'] <= default)} "
                         f"| {_yes(m['total'] <= usable(l4))} | {_yes(m['total'] <= usable(h100))} |")
    return "\n".join(lines) + "\n"


def render(doc: str, results: str) -> str:
    text = open(doc, encoding="utf-8").read()
    if "<!-- finetune-memory -->" in text:
        table = finetune_table(results)
        text = re.sub(r"(<!-- finetune-memory -->\n).*?(<!-- /finetune-memory -->)",
                      lambda m: m.group(1) + table + m.group(2), text, flags=re.S)
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
    parser.add_argument("--doc", action="append", help="a page to render (repeatable; default: docs/sharding.md "
                        "and docs/fine_tuning.md)")
    parser.add_argument("--results", default="docs/results/sharding")
    args = parser.parse_args()
    for doc in args.doc or ["docs/sharding.md", "docs/fine_tuning.md"]:
        text = render(doc, args.results)
        with open(doc, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
