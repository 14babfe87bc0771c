"""Runs the DALACE bundle benchmarks and writes ``results/<name>.json`` and ``results/summary.md``.

    python -m benchmarks                       # the full CPU run (about 15 minutes on 2 cores)
    python -m benchmarks --quick               # tiny synthetic inputs (the test's mode, seconds)
    python -m benchmarks --device cuda --amp both
    python -m benchmarks --summarize benchmarks/results/cpu_full.json   # rewrite summary.md from a JSON

Training: seconds per iteration and FLOP/s of one real DALACETrainer iteration (train.yaml) at paper
defaults and at small configurations; inference: per-stage time and peak memory of inference.yaml on
a CHAOS T2 volume and the largest CT, and how both grow with slices and in-plane size. Every rate
is compared with the dense-convolution reference rate measured in the same run, next to it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from . import report
from .common import BUNDLE, REPO, conv_reference, median, threads_info
from .synthetic import make_volume
from .training import run_training

RESULTS = Path(__file__).resolve().parent / "results"

def _config(*names: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / n) for n in names])
    return parser


#: sizes read from the bundle's configs so that they stay in sync: train.yaml's own (the shipped
#: model's), and with paper.yaml or sample.yaml composed after it
_TRAIN, _PAPER, _SAMPLE = _config("train.yaml"), _config("train.yaml", "paper.yaml"), _config("train.yaml", "sample.yaml")
SIZE_IDS = ("spacing", "roi_size", "width", "num_res_blocks")


def _net(cfg: ConfigParser) -> dict:
    return {"width": cfg["width"], "num_res_blocks": cfg["num_res_blocks"], "features": cfg["segmenter#features"]}


PAPER_NET = _net(_PAPER)
#: inference.yaml ids that turn its (shipped) sizes into the paper's
PAPER_OVERRIDES = {**{k: _PAPER[k] for k in SIZE_IDS}, "segmenter#features": _PAPER["segmenter#features"]}
TINY_NET = {"width": 4, "num_res_blocks": 1, "features": [4, 4, 8, 8, 16, 4]}
TINY_OVERRIDES = {"roi_size": [32, 32], "width": 4, "num_res_blocks": 1, "segmenter#features": TINY_NET["features"],
                  "slice_inferer#sw_batch_size": 2}


def training_configs(args) -> list[dict]:
    if args.quick:
        return [dict(name="tiny", size=32, batch=1, iterations=1, **TINY_NET)]
    sample = _SAMPLE
    configs = {
        "paper": dict(name="paper", size=_PAPER["roi_size"][0], batch=args.paper_batch, iterations=args.paper_iterations, **PAPER_NET),
        "shipped": dict(name="shipped", size=_TRAIN["roi_size"][0], batch=_TRAIN["batch_size"], iterations=args.small_iterations,
                        **_net(_TRAIN)),
        # the same with the MR consistency term (train.yaml's mr_consistency): its cost beside "shipped"
        "shipped_consistency": dict(name="shipped_consistency", size=_TRAIN["roi_size"][0], batch=_TRAIN["batch_size"],
                                    iterations=args.small_iterations, overrides={"mr_consistency": 1.0}, **_net(_TRAIN)),
        "sample": dict(name="sample", size=sample["roi_size"][0], batch=sample["batch_size"], iterations=args.small_iterations,
                       **_net(sample)),
    }
    return [configs[n] for n in args.train]


def _run_case(spec: dict, in_process: bool, env: dict | None = None) -> dict:
    if in_process:
        from .inference import run_case

        return run_case(spec)
    with tempfile.TemporaryDirectory(prefix="dalace_bench_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec = {**spec, "output_dir": spec.get("output_dir") or str(Path(tmp) / "out")}
        spec_path.write_text(json.dumps(spec))
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "benchmarks.inference", str(spec_path), str(out_path)], cwd=REPO,
                              env={**os.environ, **(env or {})}, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if done.returncode != 0:
            raise RuntimeError(f"inference worker failed for {spec['image']}:\n{done.stderr[-4000:]}")
        result = json.loads(out_path.read_text())
        result["process_wall_seconds"] = wall  # including interpreter start and imports
        return result


def _shared_data(args) -> Path | None:
    root = Path(args.data_dir) if args.data_dir else REPO.parent / "shared" / "data"
    return root if (root / "manifest.json").is_file() else None


def inference_cases(args, tmp: Path) -> list[dict]:
    """(name, image, modality) of the real cases, or synthetic stand-ins in quick mode."""
    if args.quick:
        return [
            dict(name="synthetic_mr", image=make_volume(tmp / "q_mr.nii.gz", (24, 24, 6), (2.0, 2.0, 4.0), "mr"), modality="mr",
                 config="tiny", overrides=TINY_OVERRIDES),
            dict(name="synthetic_ct", image=make_volume(tmp / "q_ct.nii.gz", (32, 32, 6), (1.0, 1.0, 3.0), "ct"), modality="ct",
                 config="tiny", overrides=TINY_OVERRIDES),
        ]
    data = _shared_data(args)
    if data is None:
        return []
    volumes = [(args.mr_case, str(data / "mr" / f"{args.mr_case}_image.nii.gz"), "mr"),
               ("chaos_ct3", str(data / "ct" / "chaos_ct3_image.nii.gz"), "ct")]
    sizes = {"paper": {"overrides": {**PAPER_OVERRIDES, "keep_slices": False}, "load_weights": False},
             "paper_keep_slices": {"overrides": {**PAPER_OVERRIDES, "keep_slices": True}, "load_weights": False},
             "shipped": {"overrides": {}, "load_weights": True},
             "shipped_one_path": {"overrides": {"extra_paths": []}, "load_weights": False},
             "shipped_ensemble": {"overrides": {}, "configs": ["ensemble.yaml"], "load_weights": True},
             "shipped_no_tta": {"overrides": {"test_time_augmentation": False}, "load_weights": True},
             "shipped_isotropic": {"overrides": {"keep_slices": False}, "load_weights": True},
             "shipped_isotropic_no_tta": {"overrides": {"keep_slices": False, "test_time_augmentation": False}, "load_weights": True},
             "shipped_self_ensemble": {"overrides": {}, "configs": ["self_ensemble.yaml"], "load_weights": True},
             "shipped_seed_ensemble": {"overrides": {}, "configs": ["self_ensemble.yaml", "seed_ensemble.yaml"], "load_weights": True},
             "shipped_model_pt": {"overrides": {"ckpt_path": str(BUNDLE / "models" / "model.pt")}, "load_weights": True},
             "shipped_tta": {"overrides": {"test_time_augmentation_ensembles": True}, "load_weights": True}}
    return [dict(name=f"{name} {size}", image=image, modality=modality, config=size, **sizes[size])
            for size in args.inference_configs for name, image, modality in volumes]


def scaling_cases(args, tmp: Path) -> list[dict]:
    """Synthetic MR volumes at the network's 1.5 mm grid: slices vary at fixed in-plane size and back."""
    if args.quick:
        slices, inplane, base_xy, base_z, spacing = [4, 6, 8], [16, 24, 40], 24, 4, (1.5, 1.5, 1.5)
    else:
        slices, inplane, base_xy, base_z, spacing = args.slices, args.inplane, 256, (args.slices or [32])[0], (1.5, 1.5, 1.5)
    cases = []
    for z in slices:
        cases.append(dict(axis="slices", name=f"syn_{base_xy}x{base_xy}x{z}", shape=[base_xy, base_xy, z]))
    for xy in inplane:
        cases.append(dict(axis="inplane", name=f"syn_{xy}x{xy}x{base_z}", shape=[xy, xy, base_z]))
    made: dict[str, str] = {}
    for c in cases:
        if c["name"] not in made:
            made[c["name"]] = make_volume(tmp / f"{c['name']}.nii.gz", tuple(c["shape"]), spacing, "mr")
        c["image"], c["modality"] = made[c["name"]], "mr"
    return cases


def environment(args) -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    import monai

    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "git_commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "device": args.device,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS") if os.environ.get(k)},
        **threads_info(),
        "quick": args.quick,
        "argv": sys.argv[1:],
    }


def thread_probe(args, log) -> list[dict]:
    """The sample training config in fresh processes with other OpenMP settings (CPU only)."""
    cfg = training_configs(args)
    cfg = next((c for c in cfg if c["name"] == "sample"), None)
    if cfg is None or args.device != "cpu":
        return []
    out = []
    code = ("import json,sys; from benchmarks.training import run_training; "
            f"r=run_training(**json.loads(sys.argv[1])); print('RESULT'+json.dumps(r))")
    kwargs = dict(name="sample", width=cfg["width"], size=cfg["size"], batch=cfg["batch"], iterations=args.probe_iterations,
                  num_res_blocks=cfg["num_res_blocks"], features=cfg["features"], device="cpu", ref_batch=args.ref_batch,
                  ref_repeats=args.ref_repeats)
    for label, env in (("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}), ("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"})):
        log(f"thread probe: sample training with {label}")
        done = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], cwd=REPO, env={**os.environ, **env},
                              capture_output=True, text=True)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), None)
        if line is None:
            out.append({"setting": label, "error": done.stderr[-2000:]})
            continue
        r = json.loads(line[6:])
        out.append({"setting": label, **{k: r[k] for k in ("s_per_iteration", "iteration_s", "achieved_gflops",
                                                            "reference_fwd_gflops", "fraction_of_reference_fwd")}})
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--amp", choices=["off", "on", "both"], default=None,
                   help="bfloat16 autocast: off, on, or both (default: off on CPU, both on CUDA)")
    p.add_argument("--quick", action="store_true", help="tiny synthetic sizes: checks the pipeline in seconds; figures meaningless")
    p.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results)")
    p.add_argument("--name", default=None, help="JSON file name (default: the device and a timestamp; 'quick' in quick mode)")
    p.add_argument("--train", nargs="*", default=["paper", "shipped", "sample"],
                   help="training configs: paper (paper.yaml), shipped (train.yaml as it is), shipped_consistency "
                        "(the same with mr_consistency 1.0), sample (sample.yaml)")
    p.add_argument("--inference-configs", nargs="*", default=["paper", "paper_keep_slices", "shipped", "shipped_one_path"],
                   help="inference sizes of the real cases: paper (paper.yaml on the isotropic grid, random weights: time "
                        "does not depend on them), paper_keep_slices (the same with thick slices kept, keep_slices), shipped "
                        "(inference.yaml as it is: MR by the three trainings of models/model_seed_ensemble.pt, each through both paths), "
                        "shipped_tta (the same with test-time augmentation), shipped_model_pt (models/model.pt alone, with "
                        "test-time augmentation, its default) and shipped_one_path "
                        "(the same sizes through MR's path alone, extra_paths [], random weights); shipped_ensemble "
                        "(ensemble.yaml: the shipped model and the CT-only U-Net, models/model_ensemble.pt); shipped_no_tta "
                        "(shipped with test-time augmentation off: since 0.18.0 the default for the seed ensemble), shipped_isotropic and "
                        "shipped_isotropic_no_tta (the same two on the isotropic grid, keep_slices false), shipped_self_ensemble "
                        "(self_ensemble.yaml, models/model_self_ensemble.pt) and shipped_seed_ensemble (seed_ensemble.yaml, "
                        "models/model_seed_ensemble.pt: the default, its members named)")
    p.add_argument("--paper-batch", type=int, default=1)
    p.add_argument("--paper-iterations", type=int, default=1, help="timed iterations at paper size after the counted one")
    p.add_argument("--small-iterations", type=int, default=3)
    p.add_argument("--probe-iterations", type=int, default=2, help="iterations per setting of the thread probe (0: skip it)")
    p.add_argument("--no-inference", action="store_true")
    p.add_argument("--data-dir", default=None, help="shared data folder (default ../shared/data)")
    p.add_argument("--mr-case", default="chaos_t2_01")
    p.add_argument("--network-calls", type=int, default=2,
                   help="sliding-window batches run for real per real case (0: all; the rest extrapolated)")
    p.add_argument("--scaling-network-calls", type=int, default=1, help="the same for the scaling volumes (0: all)")
    p.add_argument("--slices", type=int, nargs="*", default=[32, 64, 128], help="slice counts of the scaling volumes")
    p.add_argument("--inplane", type=int, nargs="*", default=[128, 256, 384], help="in-plane sizes of the scaling volumes")
    p.add_argument("--ref-batch", type=int, default=None, help="batch of the reference convolutions (default 4; 32 on CUDA)")
    p.add_argument("--ref-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for this run (default: torch's)")
    p.add_argument("--in-process", action="store_true", help="run inference cases in this process (peak memory then not per case)")
    args = p.parse_args(argv)
    if args.amp is None:
        args.amp = "both" if args.device.startswith("cuda") else "off"
    if args.ref_batch is None:
        args.ref_batch = 32 if args.device.startswith("cuda") else 4
    if args.quick:
        args.in_process, args.ref_batch, args.ref_repeats, args.probe_iterations = True, 1, 1, 0
    return args


def summarize(json_path: str) -> dict:
    """Rewrites summary.md beside a results JSON (after changes to the report, without rerunning)."""
    path = Path(json_path)
    results = json.loads(path.read_text())
    results["goals"] = report.goals(results)
    path.write_text(json.dumps(results, indent=1, default=str))
    md = report.markdown(results, path.name)
    (path.parent / ("summary_quick.md" if results["environment"].get("quick") else "summary.md")).write_text(md)
    print(md)
    return results


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--summarize"]:
        return summarize(argv[1])
    args = parse_args(argv)
    log = print
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_scale = 0.125 if args.quick else 1.0
    amps = {"off": [False], "on": [True], "both": [False, True]}[args.amp]
    results: dict = {"environment": environment(args), "reference": [], "training": [], "inference": [], "scaling": [],
                     "thread_probe": []}
    if args.device == "cpu":
        results["environment"]["note"] = "No GPU in this run: CPU figures only (rerun with --device cuda where there is one)."
    t_run = time.perf_counter()

    def reference(tag, amp=False):
        r = conv_reference(args.device, args.ref_batch, args.ref_repeats, amp, False, ref_scale)
        results["reference"].append({"when": tag, "amp_bf16": amp, "t": time.perf_counter() - t_run, **r})
        log(f"reference ({tag}): {r['best']:.1f} GFLOP/s")

    reference("start")
    for amp in amps:
        for cfg in training_configs(args):
            log(f"training {cfg['name']}: width {cfg['width']}, {cfg['size']}x{cfg['size']}, batch {cfg['batch']}, amp {amp}")
            r = run_training(cfg["name"], cfg["width"], cfg["size"], cfg["batch"], cfg["iterations"], args.device, amp,
                             cfg["num_res_blocks"], cfg["features"], args.ref_batch, args.ref_repeats, ref_scale,
                             cfg.get("overrides"), log=log)
            results["training"].append(r)
            log(f"  -> {r['s_per_iteration']:.2f} s/it, {r['achieved_gflops']:.1f} GFLOP/s, "
                f"{100 * r['fraction_of_reference_fwd']:.0f}% of the reference")
    if args.probe_iterations > 0 and "sample" in args.train:
        results["thread_probe"] = thread_probe(args, log)
    reference("after training")

    if not args.no_inference:
        with tempfile.TemporaryDirectory(prefix="dalace_bench_data_") as tmp:
            tmp = Path(tmp)
            base = {"device": args.device, "ref_batch": args.ref_batch, "ref_repeats": args.ref_repeats, "ref_scale": ref_scale,
                    "threads": args.threads, "load_weights": not args.quick}
            cases = inference_cases(args, tmp)
            if not cases:
                results["environment"]["inference_note"] = "shared data not found: real cases skipped"
            for amp in amps:
                for c in cases:
                    log(f"inference {c['name']} ({c['modality']}), amp {amp}")
                    calls = None if args.network_calls == 0 else args.network_calls
                    r = _run_case({**base, **c, "amp": amp, "network_calls": calls}, args.in_process)
                    results["inference"].append({**r, "config": c["config"]})
                    log(f"  -> total {r['total_seconds']:.1f} s (network {r['network_seconds']:.1f} s, "
                        f"{r['windows_run']}/{r['windows']} windows run), peak {r['peak_rss_mb']:.0f} MB")
                done: dict[str, dict] = {}
                for c in scaling_cases(args, tmp):
                    log(f"scaling {c['name']}, amp {amp}")
                    calls = None if args.scaling_network_calls == 0 else args.scaling_network_calls
                    if c["image"] not in done:  # a volume on both axes is measured once
                        done[c["image"]] = _run_case({**base, **c, "amp": amp, "network_calls": calls, "load_weights": False,
                                                      # one pass: how the pipeline scales, not the augmentation
                                                      "overrides": {**(TINY_OVERRIDES if args.quick else PAPER_OVERRIDES),
                                                                    "test_time_augmentation": False}}, args.in_process)
                    r = {**done[c["image"]], "axis": c["axis"], "shape": c["shape"]}
                    results["scaling"].append(r)
                    log(f"  -> total {r['total_seconds']:.1f} s, peak {r['peak_rss_mb']:.0f} MB")
        reference("end")

    results["run_seconds"] = time.perf_counter() - t_run
    results["reference_median_gflops"] = median([r["best"] for r in results["reference"] if not r["amp_bf16"]])
    results["goals"] = report.goals(results)
    name = args.name or ("quick" if args.quick else f"{args.device}_{_dt.datetime.now().strftime('%Y%m%d_%H%M%S')}")
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(results, indent=1, default=str))
    md = report.markdown(results, json_path.name)
    (out_dir / ("summary_quick.md" if args.quick else "summary.md")).write_text(md)
    log(md)
    log(f"wrote {json_path} and {out_dir / ('summary_quick.md' if args.quick else 'summary.md')}")
    return results
