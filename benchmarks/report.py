"""The goals of issue 7 checked against a benchmark run, and its Markdown summary."""

from __future__ import annotations

import math

MEMORY_GOAL_MB = 3000.0  # "under 3 GB" (MiB, the unit of /proc/self/status / 1024)
T2_GOAL_S = 60.0
NETWORK_FRACTION_GOAL = 0.60
#: memory may grow with slices by at most this many float32 copies of the (network-grid) volume:
#: image, resampled image, 2-channel logits with the sliding window's weight map, softmax, inverted
#: probabilities, label... but not by per-slice network activations
VOLUME_COPIES_ALLOWED = 16.0


def _fit(xs, ys):
    """Least-squares line (slope, intercept, r2)."""
    n = len(xs)
    if n < 2:
        return float("nan"), float("nan"), float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx if sxx else float("nan")
    icpt = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (icpt + slope * x)) ** 2 for x, y in zip(xs, ys))
    return slope, icpt, (1 - ss_res / ss_tot) if ss_tot else 1.0


def _fp32(rows):
    return [r for r in rows if not r.get("amp_bf16")]


def scaling_summary(results: dict) -> dict:
    out = {}
    rows = _fp32(results.get("scaling", []))
    sl = sorted((r for r in rows if r.get("axis") == "slices"), key=lambda r: r["slices"])
    if len(sl) >= 2:
        xs = [r["slices"] for r in sl]
        total = _fit(xs, [r["total_seconds"] for r in sl])
        non_net = _fit(xs, [r["total_seconds"] - r["network_seconds"] for r in sl])
        mem = _fit(xs, [r["peak_rss_mb"] for r in sl])
        vol_mb_per_slice = sl[0]["network_grid_shape"][0] * sl[0]["network_grid_shape"][1] * 4 / 2**20
        out["slices"] = {
            "slices": xs,
            "total_seconds": [r["total_seconds"] for r in sl],
            "seconds_per_slice": [r["total_seconds"] / r["slices"] for r in sl],
            "time_slope_s_per_slice": total[0],
            "time_intercept_s": total[1],
            "time_r2": total[2],
            "non_network_slope_s_per_slice": non_net[0],
            "non_network_r2": non_net[2],
            "peak_mb": [r["peak_rss_mb"] for r in sl],
            "memory_slope_mb_per_slice": mem[0],
            "memory_intercept_mb": mem[1],
            "float32_slice_mb": vol_mb_per_slice,
            "memory_growth_in_volume_copies": mem[0] / vol_mb_per_slice,
        }
    ip = sorted((r for r in rows if r.get("axis") == "inplane"), key=lambda r: r["network_grid_shape"][0])
    if len(ip) >= 2:
        out["inplane"] = {
            "inplane": [r["network_grid_shape"][0] for r in ip],
            "windows_per_slice": [r["windows"] / r["slices"] for r in ip],
            "total_seconds": [r["total_seconds"] for r in ip],
            "network_seconds": [r["network_seconds"] for r in ip],
            "non_network_seconds": [r["total_seconds"] - r["network_seconds"] for r in ip],
            "peak_mb": [r["peak_rss_mb"] for r in ip],
        }
    return out


def _at_paper_size(rows: list[dict]) -> list[dict]:
    """The goals are set at the paper's sizes (``tiny`` in quick mode); the shipped model's rows are extra."""
    return [r for r in rows if not str(r.get("config", "paper")).startswith("shipped")]


def goals(results: dict) -> list[dict]:
    g = []
    cases = _at_paper_size(_fp32(results.get("inference", [])))
    cpu = results.get("environment", {}).get("device", "cpu") == "cpu"
    for c in cases:
        g.append({
            "goal": f"network >= {NETWORK_FRACTION_GOAL:.0%} of the conv reference ({c['name']})" + ("" if cpu else " [CUDA]"),
            "value": c["network_fraction_of_reference"],
            "met": c["network_fraction_of_reference"] >= NETWORK_FRACTION_GOAL,
            "detail": f"{c['network_gflops']:.1f} GFLOP/s vs {c['reference_gflops']:.1f} GFLOP/s measured beside it",
        })
    for c in (c for c in cases if c["modality"] == "mr"):
        g.append({
            "goal": f"whole inference of a CHAOS T2 volume < {T2_GOAL_S:.0f} s ({c['name']})",
            "value": c["total_seconds"],
            "met": c["total_seconds"] < T2_GOAL_S,
            "detail": f"{c['total_seconds']:.0f} s of stages ({c['network_seconds']:.0f} s network for {c['windows']} windows), "
                      f"+{c['setup_seconds']:.1f} s setup",
        })
        bias = c["seconds_by_stage"].get("bias_correction", 0.0) + c["seconds_by_stage"].get("itk_load", 0.0)
        res = c["seconds_by_stage"].get("resampling", 0.0)
        g.append({
            "goal": f"bias correction + resampling below the network's time ({c['name']})",
            "value": (bias + res) / c["network_seconds"],
            "met": bias + res < c["network_seconds"],
            "detail": f"N4 {bias:.1f} s (with ITK load), resampling {res:.1f} s, network {c['network_seconds']:.1f} s",
        })
    for c in (c for c in cases if c["modality"] == "ct"):
        g.append({
            "goal": f"peak memory < 3 GB for the largest CT ({c['name']})",
            "value": c["peak_rss_mb"],
            "met": c["peak_rss_mb"] < MEMORY_GOAL_MB,
            "detail": f"{c['peak_rss_mb']:.0f} MiB peak resident (fresh process per case)",
        })
    for c in (c for c in _fp32(results.get("inference", [])) if c.get("config") == "shipped"):
        g.append({
            "goal": f"(shipped model) whole inference < {T2_GOAL_S:.0f} s, peak memory < 3 GB ({c['name']})",
            "value": c["total_seconds"],
            "met": c["total_seconds"] < T2_GOAL_S and c["peak_rss_mb"] < MEMORY_GOAL_MB,
            "detail": f"{c['total_seconds']:.1f} s of stages ({c['network_seconds']:.1f} s network), "
                      f"{c['peak_rss_mb']:.0f} MiB peak",
        })
    inference = _fp32(results.get("inference", []))
    # inference.yaml's last steps, each timed within the same inference
    for stage, step in (("thin_bridges", "cutting thin bridges"), ("slice_continuity", "slice continuity")):
        for c in (c for c in inference if c.get("config") == "shipped" and stage in c.get("seconds_by_stage", {})):
            cut = c["seconds_by_stage"][stage]
            g.append({
                "goal": f"(shipped model) {step} < 10% of the {T2_GOAL_S:.0f} s budget per volume ({c['name']})",
                "value": cut,
                "met": cut < 0.1 * T2_GOAL_S,
                "detail": f"{cut:.2f} s of the whole inference's {c['total_seconds']:.1f} s (largest component "
                          f"{c['seconds_by_stage'].get('largest_component', 0.0):.2f} s)",
            })
    for both in (c for c in inference if c.get("config") == "shipped" and c["modality"] == "mr"):
        one = next((c for c in inference if c.get("config") == "shipped_one_path" and c["image"] == both["image"]), None)
        if one:  # the two paths' network time against MR's path alone, measured in the same run
            g.append({
                "goal": f"(shipped model) both paths cost < 2x the network time of MR's path alone ({both['name']})",
                "value": both["network_seconds"] / one["network_seconds"],
                "met": both["network_seconds"] < 2 * one["network_seconds"],
                "detail": f"network {both['network_seconds']:.1f} s against {one['network_seconds']:.1f} s; whole inference "
                          f"{both['total_seconds']:.1f} s against {one['total_seconds']:.1f} s",
            })
    for ens in (c for c in inference if c.get("config") == "shipped_ensemble" and c["modality"] == "mr"):
        both = next((c for c in inference if c.get("config") == "shipped" and c["image"] == ens["image"]), None)
        if both:  # the ensemble's whole inference against DALACE's alone, measured in the same run
            g.append({
                "goal": f"(ensemble.yaml) whole inference < {T2_GOAL_S:.0f} s ({ens['name']})",
                "value": ens["total_seconds"],
                "met": ens["total_seconds"] < T2_GOAL_S,
                "detail": f"{ens['total_seconds']:.1f} s ({ens['network_seconds']:.1f} s network) against DALACE alone "
                          f"{both['total_seconds']:.1f} s ({both['network_seconds']:.1f} s): "
                          f"{ens['network_seconds'] / both['network_seconds']:.2f}x the network time",
            })
    sc = scaling_summary(results).get("slices")
    if sc:
        # linear: a straight line explains the times, and the per-slice time does not grow with slices
        per = sc["seconds_per_slice"]
        g.append({
            "goal": "time linear in the number of slices",
            "value": sc["time_r2"],
            "met": sc["time_r2"] >= 0.98 and per[-1] <= 1.1 * per[0],
            "detail": f"R^2 {sc['time_r2']:.4f}, {sc['time_slope_s_per_slice']:.2f} s/slice; s/slice "
                      + ", ".join(f"{p:.2f}" for p in per) + f" at {sc['slices']} slices",
        })
        g.append({
            "goal": "memory not growing with slices beyond the volume",
            "value": sc["memory_growth_in_volume_copies"],
            "met": sc["memory_growth_in_volume_copies"] <= VOLUME_COPIES_ALLOWED,
            "detail": f"{sc['memory_slope_mb_per_slice']:.2f} MiB per slice = {sc['memory_growth_in_volume_copies']:.1f} "
                      f"float32 copies of a {sc['float32_slice_mb']:.2f} MiB slice (allowed {VOLUME_COPIES_ALLOWED:.0f})",
        })
    return g


def _f(v, fmt=".2f"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def markdown(results: dict, json_name: str) -> str:
    env = results["environment"]
    L = ["# DALACE liver bundle: benchmarks", ""]
    L.append(f"Run {env['date']} at commit `{env['git_commit']}`, {results['run_seconds'] / 60:.1f} min; "
             f"full figures in `{json_name}`. Regenerate: `python -m benchmarks` (`--help` for sizes, `--device cuda`, `--amp both`).")
    L.append("")
    L.append(f"- Device: **{env['device']}** ({env['cpu'] or 'unknown CPU'}, {env['cpu_count']} cores, torch "
             f"{env['torch_num_threads']} threads, load average at start {', '.join(_f(x, '.1f') for x in env['load_average'] or [])}); "
             f"GPU: {env['gpu'] or 'none available in this run'}. torch {env['torch']}, MONAI {env['monai']}.")
    if env.get("note"):
        L.append(f"- {env['note']}")
    if env.get("quick"):
        L.append("- **Quick mode**: tiny synthetic sizes to check the pipeline; the figures mean nothing.")
    L.append("- The CPU is shared with other jobs: every rate is compared with the dense-convolution reference "
             "(3x3 conv, 256 ch at 64x64 and 64 ch at 256x256, best of the two) measured in the same run right beside it; "
             "medians of repeats. FLOPs count a multiply-add as 2 (`torch.utils.flop_counter`).")
    refs = results.get("reference", [])
    if refs:
        L.append("- Reference rate over the run (GFLOP/s): " + ", ".join(f"{r['when']} {r['best']:.1f}" for r in refs)
                 + f"; median {results['reference_median_gflops']:.1f}.")
    L.append("")

    L += ["## Goals (issue 7)", "", "| goal | met | measured |", "|---|---|---|"]
    for g in results.get("goals", []):
        L.append(f"| {g['goal']} | {'**met**' if g['met'] else '**not met**'} | {g['detail']} |")
    L.append("")

    tr = results.get("training", [])
    if tr:
        L += ["## Training (one DALACETrainer iteration of train.yaml at each config's sizes, pair game active)", "",
              "| config | width | image | batch | params (M) | TFLOP / it | s / it (timed its) | it / s | GFLOP/s | ref fwd GFLOP/s | fraction of ref fwd | ref fwd+bwd GFLOP/s | fraction of ref fwd+bwd | amp |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in tr:
            L.append(f"| {r['name']} | {r['width']} | {r['image_size'][0]}x{r['image_size'][1]} | {r['batch_size']} | "
                     f"{r['parameters'] / 1e6:.2f} | {r['flops_per_iteration'] / 1e12:.3f} | {r['s_per_iteration']:.2f} "
                     f"({len(r['iteration_s'])}) | {r['iterations_per_s']:.3f} | {r['achieved_gflops']:.1f} | {r['reference_fwd_gflops']:.1f} | "
                     f"{100 * r['fraction_of_reference_fwd']:.0f}% | {r['reference_fwd_bwd_gflops']:.1f} | "
                     f"{100 * r['fraction_of_reference_fwd_bwd']:.0f}% | {'bf16' if r['amp_bf16'] else 'fp32'} |")
        L.append("")
        L.append("FLOPs counted over one full iteration (forward of every path, then one restricted `autograd.grad` per "
                 "optimizer, which re-traverses shared parts of the graph); s/it is the median of the timed iterations "
                 "after that counted one (which also warms up: its time is in the JSON). At paper size an iteration takes "
                 "tens of seconds on a CPU, so only the iterations shown were timed.")
        L.append("")
    tp = results.get("thread_probe", [])
    if tp:
        base = next((r for r in tr if r["name"] == "sample" and not r["amp_bf16"]), None)
        L += ["### Threading (sample config, fresh process per setting)", "",
              "| setting | s / it | GFLOP/s | fraction of ref fwd |", "|---|---|---|---|"]
        if base:
            L.append(f"| default (this run) | {base['s_per_iteration']:.2f} | {base['achieved_gflops']:.1f} | "
                     f"{100 * base['fraction_of_reference_fwd']:.0f}% |")
        for r in tp:
            if "error" in r:
                L.append(f"| {r['setting']} | failed | | |")
            else:
                L.append(f"| {r['setting']} | {r['s_per_iteration']:.2f} | {r['achieved_gflops']:.1f} | "
                         f"{100 * r['fraction_of_reference_fwd']:.0f}% |")
        L.append("")

    inf = results.get("inference", [])
    if inf:
        L += ["## Inference (inference.yaml, stage by stage, fresh process per case)", ""]
        stages = []
        for r in inf:
            for s in r["seconds_by_stage"]:
                if s not in stages:
                    stages.append(s)
        L.append("| stage | " + " | ".join(f"{r['name']} ({'bf16' if r['amp_bf16'] else 'fp32'}) s | share | peak MiB" for r in inf) + " |")
        L.append("|---|" + "---|---|---|" * len(inf))
        for s in stages:
            cells = []
            for r in inf:
                v = r["seconds_by_stage"].get(s)
                share = "" if v is None or s == "setup" else f"{100 * v / r['total_seconds']:.1f}%"
                cells += [_f(v, ".2f"), share, _f(r["peak_rss_mb_by_stage"].get(s), ".0f")]
            L.append(f"| {s} | " + " | ".join(cells) + " |")
        L.append("| **total (without setup)** | " + " | ".join(f"**{r['total_seconds']:.1f}** | | **{r['peak_rss_mb']:.0f}**" for r in inf) + " |")
        L.append("")
        L += ["| case | input | network grid | windows (run) | GFLOP / window | s / window | slices / s | network GFLOP/s | ref GFLOP/s | fraction | native-slice network estimate |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in inf:
            wps = r["windows"] / max(r["slices"], 1)
            native = r["input_shape"][2] * wps * r["s_per_window"]
            L.append(f"| {r['name']} ({'bf16' if r['amp_bf16'] else 'fp32'}) | {'x'.join(map(str, r['input_shape']))} @ "
                     f"{'x'.join(_f(p, '.2f') for p in r['input_pixdim'])} mm | {'x'.join(map(str, r['network_grid_shape']))} | "
                     f"{r['windows']} ({r['windows_run']}) | {r['flops_per_window'] / 1e9:.1f} | {r['s_per_window']:.2f} | "
                     f"{r['slices_per_s']:.2f} | {r['network_gflops']:.1f} | {r['reference_gflops']:.1f} | "
                     f"{100 * r['network_fraction_of_reference']:.0f}% | {native:.0f} s |")
        L.append("")
        L.append("Network time = the inferer's wall time (padding, Gaussian weighting and aggregation over the whole volume, "
                 "plus the windows run for real) + the windows not run x the median s/window of those run (first call, "
                 "which carries one-off set-up, excluded when possible). 'native-slice estimate': the network time if the "
                 "volume kept its own slices (no through-plane resampling to 1.5 mm). `setup` = parsing the config and "
                 "building the network (not in the total); `itk_load` = ITK's lazy module load on the first N4 call "
                 f"(in the total). Weights: " + "; ".join(sorted({f"{r.get('config', r['name'])}: {r['weights']}" for r in inf})) + ".")
        L.append("")

    sc = scaling_summary(results)
    if sc:
        L += ["## Scaling (synthetic MR volumes on the 1.5 mm grid, N4 included)", ""]
        if "slices" in sc:
            s = sc["slices"]
            L += ["| slices | total s | s / slice | peak MiB |", "|---|---|---|---|"]
            for i, z in enumerate(s["slices"]):
                L.append(f"| {z} | {s['total_seconds'][i]:.1f} | {s['seconds_per_slice'][i]:.2f} | {s['peak_mb'][i]:.0f} |")
            L.append("")
            L.append(f"Time: {s['time_slope_s_per_slice']:.2f} s per slice + {s['time_intercept_s']:.1f} s (R^2 {s['time_r2']:.4f}); "
                     f"without the network {s['non_network_slope_s_per_slice']:.3f} s per slice (R^2 {s['non_network_r2']:.3f}). "
                     f"Memory: {s['memory_slope_mb_per_slice']:.2f} MiB per slice + {s['memory_intercept_mb']:.0f} MiB, i.e. "
                     f"{s['memory_growth_in_volume_copies']:.1f} float32 copies of a slice.")
            L.append("")
        if "inplane" in sc:
            s = sc["inplane"]
            L += ["| in-plane | windows / slice | total s | network s | rest s | peak MiB |", "|---|---|---|---|---|---|"]
            for i, n in enumerate(s["inplane"]):
                L.append(f"| {n}x{n} | {s['windows_per_slice'][i]:.0f} | {s['total_seconds'][i]:.1f} | {s['network_seconds'][i]:.1f} | "
                         f"{s['non_network_seconds'][i]:.1f} | {s['peak_mb'][i]:.0f} |")
            L.append("")
            L.append("The network cost is a step function of the in-plane size: every slice is padded to the 256x256 window, "
                     "and larger slices take (ceil((n - 256) / 192) + 1)^2 windows (overlap 0.25).")
            L.append("")
    notes = list(results.get("notes", [])) + auto_notes(results)
    if notes:
        L += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(L) + "\n"


def auto_notes(results: dict) -> list[str]:
    """What the figures imply, computed from them (caveats first)."""
    notes = []
    inf = _fp32(results.get("inference", []))
    for r in inf:
        if r["windows_run"] < r["windows"]:
            calls = ", ".join(f"{c['seconds'] / c['windows']:.2f}" for c in r["network_calls"])
            notes.append(f"{r['name']}: the network ran for real on {r['windows_run']} of {r['windows']} windows "
                         f"(s/window per batch: {calls}); the rest of its time is extrapolated (`--network-calls 0` runs all).")
    sc = [r for r in _fp32(results.get("scaling", [])) if r["windows_run"] < r["windows"]]
    if sc:
        notes.append("Scaling volumes: the network ran one sliding-window batch per volume and is extrapolated, so its part "
                     "is linear by construction (sliding-window batches are independent and equal in cost, as the per-batch "
                     "times above show); everything else (N4, resampling, the inferer's aggregation, inversion, writing) "
                     "and the memory are measured in full (`--scaling-network-calls 0` runs all).")
    mr = [r for r in _at_paper_size(inf) if r["modality"] == "mr"]
    if mr:
        r = mr[0]
        wps = r["windows"] / max(r["slices"], 1)
        native = r["input_shape"][2] * wps * r["s_per_window"]
        need = r["flops_per_window"] * r["windows"] / 60.0 / 1e9
        notes.append(f"T2 goal: at paper defaults the network needs {r['flops_per_window'] / 1e9:.0f} GFLOP per window and "
                     f"{r['windows']} windows ({r['input_shape'][2]} slices of {r['input_pixdim'][2]:.1f} mm resampled to "
                     f"{r['network_grid_shape'][2]} at 1.5 mm): under 60 s would take {need:.0f} GFLOP/s, "
                     f"{need / r['reference_gflops']:.1f}x this CPU's measured dense-convolution rate, so no result-preserving "
                     f"setting reaches it here. Running the 2D network on the volume's own slices (in-plane resampling only, "
                     f"`keep_slices: true`) cuts the network to about {native:.0f} s (estimated from this row; the "
                     f"keep_slices rows measure it); its effect on Dice is in docs/README.md.")
    tp = [t for t in results.get("thread_probe", []) if "error" not in t]
    base = next((r for r in results.get("training", []) if r["name"] == "sample" and not r["amp_bf16"]), None)
    if tp and base:
        best = min(tp, key=lambda t: t["s_per_iteration"])
        gain = base["s_per_iteration"] / best["s_per_iteration"]
        if gain >= 1.5:
            notes.append(f"Threads: small configurations are dominated by OpenMP hand-offs between threads on this "
                         f"machine: the sample config runs {gain:.0f}x faster with {best['setting']} "
                         f"({best['s_per_iteration']:.2f} vs {base['s_per_iteration']:.2f} s/it). Set it in the environment "
                         f"of small-scale CPU training (not for paper-size layers).")
        else:
            rank = "the fastest setting" if gain <= 1 else f"within {100 * (gain - 1):.0f}% of the fastest"
            notes.append(f"Threads: torch's default threads were {rank} for the sample config in this run "
                         f"({base['s_per_iteration']:.2f} s/it; "
                         + ", ".join(f"{t['setting']} {t['s_per_iteration']:.2f}" for t in tp)
                         + "). OpenMP hand-offs cost most when other jobs share the cores (load average above): there, "
                         "OMP_NUM_THREADS=1 has measured many times faster for small configurations.")
    return notes
