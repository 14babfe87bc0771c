"""Distributed training on CPU with gloo: two processes stay in lockstep, and the bundle's
multi_gpu_train.yaml runs under torchrun."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from custom.engines import DALACETrainer
from custom.losses import DALACELoss
from custom.networks import DALACE
from tests.helpers import TINY_NET, tiny_unet

from tests.helpers import BUNDLE  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # different initial weights and data on every rank
    net = DALACE(tiny_unet(), **TINY_NET)
    opts = {k: torch.optim.Adam(v, lr=1e-2) for k, v in net.parameter_groups().items()}
    data = [
        {"ct_image": torch.rand(2, 1, 32, 32) * 2 - 1, "ct_label": (torch.rand(2, 1, 32, 32) > 0.5).float(), "mr_image": torch.rand(2, 1, 32, 32) * 2 - 1}
        for _ in range(2)
    ]
    DALACETrainer("cpu", 1, data, net, opts, DALACELoss(), pair_warmup_epochs=0).run()
    torch.save({k: v.detach() for k, v in net.named_parameters()}, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
    # and training moved them away from rank 0's start
    torch.manual_seed(100)
    start = dict(DALACE(tiny_unet(), **TINY_NET).named_parameters())
    assert any(not torch.equal(a[n], start[n].detach()) for n in a)


@pytest.mark.slow
def test_multi_gpu_config_runs_with_torchrun_on_cpu(tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "training", "--config_file",
        str([str(BUNDLE / "configs" / "train.yaml"), str(BUNDLE / "configs" / "multi_gpu_train.yaml"), str(Path(__file__).parent / "configs" / "tiny.yaml")]),
        "--bundle_root", str(BUNDLE), "--output_dir", str(tmp_path / "run"), "--models_dir", str(tmp_path), "--bias_correction", "False",
    ]
    done = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    # each rank ran half of the sampler's items: epoch_length 2 over 2 ranks gives 1 iteration per epoch
    assert state["trainer"]["epoch_length"] == 1 and state["trainer"]["iteration"] == 2
    assert (tmp_path / "model.pt").exists() and (tmp_path / "run" / "losses.csv").exists()
