"""The trainers' skeleton, ``MultiOptimizerTrainer`` (one batch, several optimizer updates, MONAI's events), and the
DALACE trainer on it: the paper's three-part update on one CT batch and one MR batch per iteration."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Events
from monai.engines import IterationEvents, Trainer
from monai.engines.workflow import Workflow
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer

from custom.losses import DALACELoss
from custom.networks import DALACE

__all__ = ["DALACETrainer", "MultiOptimizerTrainer", "prepare_unpaired_batch"]


def prepare_unpaired_batch(batch: dict, device: torch.device | str, non_blocking: bool = False, **kwargs: Any) -> dict:
    """Moves ``ct_image``, ``ct_label``, ``mr_image`` and, when present, ``mr_label`` and ``mr_image_strong`` (the
    re-rendered MR slice of the consistency term) to ``device``."""
    keys = ("ct_image", "ct_label", "mr_image", "mr_label", "mr_image_strong")
    return {
        k: torch.as_tensor(batch[k]).to(device=device, non_blocking=non_blocking, **kwargs)
        for k in keys
        if k in batch and batch[k] is not None
    }


class MultiOptimizerTrainer(Trainer):
    """A MONAI ``Trainer`` whose iteration minimises several losses, each over its own parameters.

    This class owns the iteration (:meth:`_iteration`): batch to device, the joint-learning label
    check, one forward pass (:meth:`forward`), the losses as a list of (optimizer name, loss) updates
    and the logs (:meth:`updates`), then :meth:`apply_updates`, firing MONAI's ``IterationEvents`` on
    the way as MONAI's ``SupervisedTrainer`` does. Every gradient is taken at the same parameters
    before any optimizer steps (``torch.autograd.grad`` restricted to that optimizer's parameters), so
    no loss leaks into a network it must not update, and one forward pass serves every update. Under
    DDP (``torch.distributed`` initialised) gradients are averaged over processes here, which is why
    networks are not wrapped in ``DistributedDataParallel``.

    Args:
        network: has ``parameter_groups()``, name -> parameters of the optimizer of that name.
        optimizers: name -> optimizer.
        loss: the loss terms, used by the subclass.
        mr_supervised: batches carry ``mr_label`` (joint learning); checked before the forward pass.
        amp: autocast on the device with ``amp_kwargs`` (MONAI's; default ``{"dtype": torch.bfloat16}``);
            a ``float16`` dtype adds a gradient scaler, bfloat16 needs none.
        Others as MONAI's ``SupervisedTrainer``.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizers: dict[str, Optimizer],
        loss: torch.nn.Module,
        mr_supervised: bool = False,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = prepare_unpaired_batch,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        amp_kwargs: dict | None = None,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
    ) -> None:
        amp_kwargs = {"dtype": torch.bfloat16, **(amp_kwargs or {})}
        if isinstance(amp_kwargs["dtype"], str):
            amp_kwargs["dtype"] = getattr(torch, amp_kwargs["dtype"])
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=False,
            amp_kwargs=amp_kwargs,
        )
        self.network, self.optimizers, self.loss, self.mr_supervised = network, optimizers, loss, mr_supervised
        self.scaler = torch.amp.GradScaler("cuda") if amp and amp_kwargs["dtype"] == torch.float16 else None
        self.add_event_handler(Events.STARTED, self._broadcast_from_rank0)

    @staticmethod
    def world_size() -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def _broadcast_from_rank0(self, engine: MultiOptimizerTrainer) -> None:
        """Under DDP every process starts from rank 0's weights (seeds may differ per rank)."""
        if self.world_size() > 1:
            for t in [*engine.network.parameters(), *engine.network.buffers()]:
                dist.broadcast(t.data, src=0)

    def require_optimizers(self, names: set[str]) -> None:
        missing = names - set(self.optimizers)
        if missing:
            raise ValueError(f"{type(self).__name__} needs optimizers for {sorted(missing)}; got {sorted(self.optimizers)}.")

    def run(self) -> None:  # type: ignore[override]
        """Runs training with the scaler chosen at construction (MONAI's ``Trainer.run`` would add one
        for any amp, bfloat16 included)."""
        Workflow.run(self)

    def autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type=torch.device(self.state.device).type, **self.amp_kwargs)

    # -------------------------------------------------------------------------------- iteration
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The network's paths on one batch (under autocast)."""
        raise NotImplementedError

    def updates(
        self, batch: dict[str, torch.Tensor], paths: dict[str, torch.Tensor]
    ) -> tuple[list[tuple[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """(optimizer name, loss to minimise over its parameters) pairs, and the logs by name (``loss``
        the total); under autocast."""
        raise NotImplementedError

    def train_step(self, batchdata: dict) -> dict[str, float]:
        """One training iteration outside :meth:`run` (benchmarks): the next iteration of the first epoch
        unless the state says otherwise."""
        self.state.epoch = max(self.state.epoch, 1)
        self.state.iteration += 1
        return self._iteration(self, batchdata)

    def _iteration(self, engine: MultiOptimizerTrainer, batchdata: dict) -> dict[str, float]:
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        if engine.mr_supervised and "mr_label" not in batch:
            raise ValueError("mr_supervised=True (joint learning) but the batch has no 'mr_label'.")
        engine.network.train()
        with engine.autocast():  # the whole forward, losses included (GAN criteria force float32)
            paths = engine.forward(batch)
            engine.state.output = {Keys.PRED: paths}
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            updates, logs = engine.updates(batch, paths)
            engine.state.output[Keys.LOSS] = logs["loss"]
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.apply_updates(updates, engine.network.parameter_groups())
        return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in logs.items()}

    def apply_updates(self, updates: list[tuple[str, torch.Tensor]], groups: dict[str, list[torch.nn.Parameter]]) -> None:
        """Takes every update's gradients first, then steps each optimizer with its own."""
        scaler = self.scaler
        grads = []
        for name, value in updates:
            params = [p for p in groups[name] if p.requires_grad]
            if not torch.isfinite(value.detach()):
                raise FloatingPointError(
                    f"Non-finite '{name}' loss at epoch {self.state.epoch}, iteration {self.state.iteration}."
                )
            scaled = scaler.scale(value) if scaler is not None else value
            g = torch.autograd.grad(scaled, params, retain_graph=True, allow_unused=True)
            grads.append((name, params, g))
        self.fire_event(IterationEvents.BACKWARD_COMPLETED)
        world = self.world_size()
        for name, params, g in grads:
            optimizer = self.optimizers[name]
            optimizer.zero_grad(set_to_none=True)
            for p, gp in zip(params, g):
                if gp is not None:
                    if world > 1:
                        dist.all_reduce(gp)
                        gp /= world
                    p.grad = gp
            if scaler is not None:
                scaler.step(optimizer)
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()
        self.fire_event(IterationEvents.MODEL_COMPLETED)


class DALACETrainer(MultiOptimizerTrainer):
    """Adversarial training of :class:`~custom.networks.DALACE` (paper section 3.3).

    Each iteration runs all of Fig. 2 once and then updates, each part with its own Adam:

    1. ``autoencoder`` (encoders and generators): alpha * L_img + beta * L_latent, plus the generator
       side of the cross-domain game L_cross_adv (DAM, eq. 4-6) when ``use_dam``;
    2. ``image_discriminators`` (D_CT, D_MR): their side of that game;
    3. ``segmenter`` (S): L_CE on CT domain-agnostic images (and on MR ones when ``mr_supervised``,
       the joint-learning task); ``anatomy`` (anatomy encoders and generators, lr 1e-4 in the paper):
       L_CE too, since its gradient is what keeps anatomy in the domain-agnostic images, plus the
       generator side of the pair game L_pair_adv (APM, eq. 8) once ``epoch > pair_warmup_epochs``;
       beyond the paper, when the loss ``supervises_mr_path``, the CT labels also on MR's path
       (CT->MR translations and the CT slices through MR's anatomy encoder) join L_CE;
       ``pair_discriminator``: its side of the pair game, on the same schedule.

    Beyond the paper, when the loss has a ``consistency_weight``: from epoch ``consistency_warmup_epochs + 1``
    the segmentation of each MR slice re-rendered by the appearance augmentation (``mr_image_strong``),
    through MR's path and CT's, learns the ``teacher``'s confident mask of the slice as it is
    (:meth:`~custom.losses.DALACELoss.mr_consistency`); it joins L_CE (segmenter and anatomy updates).

    With ``use_apm=False`` (DADR, the paper's ablation) the segmenter learns from detached
    domain-agnostic images and there is no pair game; ``use_dam=False`` drops D_CT and D_MR.

    Args:
        device: where to train.
        max_epochs: epochs to run (2600 in the paper).
        train_data_loader: yields dicts with ``ct_image``, ``ct_label``, ``mr_image`` (and ``mr_label``).
        network: the DALACE composite.
        optimizers: the keys of ``DALACE.parameter_groups()`` that the chosen variant uses.
        loss: the loss terms and their weights.
        pair_warmup_epochs: epochs during which L_pair_adv is not optimised (600 in the paper).
        use_dam, use_apm: the paper's ablations (Table 4).
        mr_supervised: also learn L_CE from MR labels (joint learning, Table 3).
        teacher: MR slice -> logits, the masks of the consistency term (train.yaml: the weight averages of
            both paths); needed when the loss has a ``consistency_weight``, run without gradients.
        consistency_warmup_epochs: epochs before the consistency term starts (the teacher must segment first).
        kwargs: of :class:`MultiOptimizerTrainer` (``epoch_length``, ``train_handlers``, ``amp``...).
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        network: DALACE,
        optimizers: dict[str, Optimizer],
        loss: DALACELoss,
        pair_warmup_epochs: int = 600,
        use_dam: bool = True,
        use_apm: bool = True,
        mr_supervised: bool = False,
        teacher: torch.nn.Module | None = None,
        consistency_warmup_epochs: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, network, optimizers, loss, mr_supervised, **kwargs)
        if loss.consistency_weight and teacher is None:
            raise ValueError("the loss has a consistency_weight (mr_consistency) but the trainer was given no teacher.")
        self.teacher, self.consistency_warmup_epochs = teacher, consistency_warmup_epochs
        self.pair_warmup_epochs = pair_warmup_epochs
        self.use_dam, self.use_apm = use_dam, use_apm
        required = {"autoencoder", "segmenter"} | ({"image_discriminators"} if use_dam else set())
        self.require_optimizers(required | ({"anatomy", "pair_discriminator"} if use_apm else set()))

    # --------------------------------------------------------------------------------- schedule
    def pair_game_active(self, epoch: int) -> bool:
        """The APM's pair game starts after ``pair_warmup_epochs`` epochs (epochs count from 1)."""
        return self.use_apm and epoch > self.pair_warmup_epochs

    def consistency_active(self, epoch: int) -> bool:
        """The MR consistency term runs after ``consistency_warmup_epochs`` epochs, when weighted."""
        return bool(self.loss.consistency_weight) and epoch > self.consistency_warmup_epochs

    # -------------------------------------------------------------------------------- iteration
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        paths = self.network(
            batch["ct_image"], batch["mr_image"], detach_agnostic=not self.use_apm, cross_paths=self.loss.supervises_mr_path
        )
        if self.consistency_active(self.state.epoch):
            if "mr_image_strong" not in batch:
                raise ValueError(
                    "mr_consistency is on but the MR samples have no 'image_strong' (train.yaml's strong_view_mr "
                    "transforms and the dataset's keys make it)."
                )
            with torch.no_grad():
                paths["teacher_mr"] = self.teacher(batch["mr_image"])
            strong = batch["mr_image_strong"]
            segment = (lambda x: self.network.segmenter(x.detach())) if not self.use_apm else self.network.segmenter
            for m in ("mr", "ct"):
                paths[f"seg_mr_strong_via_{m}"] = segment(self.network.domain_agnostic_image(strong, m))
        return paths

    def updates(self, batch: dict[str, torch.Tensor], paths: dict[str, torch.Tensor]):
        x_ct, y_ct, x_mr = batch["ct_image"], batch["ct_label"], batch["mr_image"]
        model, loss = self.network, self.loss
        pair_active = self.pair_game_active(self.state.epoch)
        logs: dict[str, torch.Tensor] = {}
        updates: list[tuple[str, torch.Tensor]] = []

        # (1) reconstruction + generator side of the cross-domain game
        recon = loss.reconstruction(paths, x_ct.float(), x_mr.float())
        logs.update({f"recon/{k}": v for k, v in recon.items()})
        autoencoder_loss = recon["total"]
        if self.use_dam:
            adv = loss.cross_adversarial_generator(model.image_discriminators, paths)
            logs.update({f"dam/{k}": v for k, v in adv.items()})
            autoencoder_loss = autoencoder_loss + adv["total"]
        updates.append(("autoencoder", autoencoder_loss))

        # (2) D_CT and D_MR
        if self.use_dam:
            disc = loss.cross_adversarial_discriminator(model.image_discriminators, paths, x_ct, x_mr)
            logs.update({f"dam/{k}": v for k, v in disc.items()})
            updates.append(("image_discriminators", disc["total"]))

        # (3) segmenter, anatomy preservation and the pair game
        ce = loss.segmentation(paths["seg_ct"].float(), y_ct)
        logs["apm/ce_ct"] = ce
        if self.mr_supervised:
            logs["apm/ce_mr"] = loss.segmentation(paths["seg_mr"].float(), batch["mr_label"])
            ce = ce + logs["apm/ce_mr"]
        ce = loss.ce_weight * ce
        if loss.supervises_mr_path:
            mr_path = loss.mr_path_segmentation(paths, y_ct)
            logs.update({f"apm/{k}": v for k, v in mr_path.items() if k != "total"})
            ce = ce + mr_path["total"]
        if "teacher_mr" in paths:
            students = {m: paths[f"seg_mr_strong_via_{m}"] for m in ("mr", "ct")}
            consistency = loss.mr_consistency(paths["teacher_mr"], students)
            logs.update({f"apm/{k}": v for k, v in consistency.items() if k != "total"})
            ce = ce + consistency["total"]
        updates.append(("segmenter", ce))
        if self.use_apm:
            anatomy_loss = ce
            if pair_active:
                logs["apm/pair_gen"] = loss.pair_generator(model.pair_discriminator, paths)
                logs["apm/pair_disc"] = loss.pair_discriminator(model.pair_discriminator, paths)
                anatomy_loss = anatomy_loss + loss.pair_weight * logs["apm/pair_gen"]
                updates.append(("pair_discriminator", logs["apm/pair_disc"]))
            updates.append(("anatomy", anatomy_loss))

        logs["loss"] = autoencoder_loss.detach() + ce.detach()
        logs["pair_game"] = float(pair_active)
        return updates, logs
