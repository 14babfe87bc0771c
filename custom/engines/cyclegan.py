"""Training of the pixel-level translation baselines, CycleGAN and TD-GAN (paper Tables 1-3)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim import Optimizer

from custom.losses import DALACELoss
from custom.networks import CycleGAN

from .trainer import MultiOptimizerTrainer

__all__ = ["CycleGANTrainer"]


class CycleGANTrainer(MultiOptimizerTrainer):
    """CycleGAN (Zhu et al. 2017) with a segmenter, in two flavours chosen by ``task_driven``:

    - CycleGAN baseline (``task_driven=False``): translators learn CT <-> MR with the adversarial and
      cycle-consistency losses; S learns L_CE on CT translated to MR (detached) and segments real MR.
    - TD-GAN (``task_driven=True``, Zhang et al. 2018, the paper's "without disentanglement"
      ablation): S learns L_CE on real CT, and the CT round trip CT -> MR -> CT must segment like the
      CT (a task-driven loss that reaches the translators); at test time MR is translated to CT and
      segmented.

    Updates, each with its own optimizer (see :class:`MultiOptimizerTrainer`): ``translators``
    (adversarial + ``cycle_weight`` * cycle L1 [+ task-driven CE]), ``image_discriminators`` and
    ``segmenter``.

    Args:
        network: the :class:`~custom.networks.CycleGAN`.
        optimizers: keys ``translators``, ``image_discriminators``, ``segmenter``.
        loss: supplies the GAN criterion and the segmentation loss (:class:`~custom.losses.DALACELoss`).
        cycle_weight: weight of the cycle-consistency L1 (10 in CycleGAN).
        task_driven: TD-GAN instead of the CycleGAN baseline.
        mr_supervised: also learn L_CE on labelled MR (joint learning).
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        network: CycleGAN,
        optimizers: dict[str, Optimizer],
        loss: DALACELoss,
        cycle_weight: float = 10.0,
        task_driven: bool = False,
        mr_supervised: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, network, optimizers, loss, mr_supervised, **kwargs)
        self.cycle_weight, self.task_driven = cycle_weight, task_driven
        self.require_optimizers({"translators", "image_discriminators", "segmenter"})

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.network(batch["ct_image"], batch["mr_image"])

    def updates(self, batch: dict[str, torch.Tensor], p: dict[str, torch.Tensor]):
        x_ct, y_ct, x_mr = batch["ct_image"], batch["ct_label"], batch["mr_image"]
        net, loss = self.network, self.loss
        logs: dict[str, torch.Tensor] = {}
        adv = loss.cross_adversarial_generator(net.image_discriminators, p)
        logs["gan/adv_ct2mr"], logs["gan/adv_mr2ct"] = adv["adv_ct2mr"], adv["adv_mr2ct"]
        logs["gan/cycle_ct"] = F.l1_loss(p["ct_cycle"].float(), x_ct.float())
        logs["gan/cycle_mr"] = F.l1_loss(p["mr_cycle"].float(), x_mr.float())
        translators = adv["total"] + self.cycle_weight * (logs["gan/cycle_ct"] + logs["gan/cycle_mr"])
        disc = loss.cross_adversarial_discriminator(net.image_discriminators, p, x_ct, x_mr)
        logs["gan/d_ct"], logs["gan/d_mr"] = disc["d_ct"], disc["d_mr"]

        if self.task_driven:
            logs["seg/ce_ct"] = loss.segmentation(net.segmenter(x_ct).float(), y_ct)
            logs["seg/ce_ct_cycle"] = loss.segmentation(net.segmenter(p["ct_cycle"]).float(), y_ct)
            translators = translators + loss.ce_weight * logs["seg/ce_ct_cycle"]
            seg = logs["seg/ce_ct"] + logs["seg/ce_ct_cycle"]
        else:
            logs["seg/ce_ct2mr"] = loss.segmentation(net.segmenter(p["ct2mr"].detach()).float(), y_ct)
            seg = logs["seg/ce_ct2mr"]
        if self.mr_supervised:
            x = net.translators["mr2ct"](x_mr).detach() if self.task_driven else x_mr
            logs["seg/ce_mr"] = loss.segmentation(net.segmenter(x).float(), batch["mr_label"])
            seg = seg + logs["seg/ce_mr"]

        logs["loss"] = translators.detach() + seg.detach()
        updates = [("translators", translators), ("image_discriminators", disc["total"]), ("segmenter", loss.ce_weight * seg)]
        return updates, logs
