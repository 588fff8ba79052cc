"""Diffusion training maths for the built-in model, matched to `UnCLIPScheduler` at sampling time.

The noise schedule comes from the scheduler itself, so training and sampling cannot disagree.
The decoder learns its variance the way unCLIP (via Improved DDPM) does: the noise prediction
gets the plain MSE, the variance channels get the variational bound with the mean held fixed.
"""

from __future__ import annotations

import math

import torch


class NoiseSchedule:
    """The 1000-step cosine schedule of `UnCLIPScheduler`, as tensors for training."""

    def __init__(self, num_train_timesteps: int = 1000) -> None:
        from diffusers.schedulers.scheduling_unclip import UnCLIPScheduler

        scheduler = UnCLIPScheduler(num_train_timesteps=num_train_timesteps)
        self.num_train_timesteps = num_train_timesteps
        self.betas = scheduler.betas.double()
        self.alphas_cumprod = scheduler.alphas_cumprod.double()
        previous = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.alphas_cumprod_prev = previous
        posterior_variance = self.betas * (1 - previous) / (1 - self.alphas_cumprod)
        # The posterior variance is 0 at t=0; use t=1's there, as Improved DDPM does.
        self.posterior_log_variance = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
        self.posterior_mean_x0 = self.betas * previous.sqrt() / (1 - self.alphas_cumprod)
        self.posterior_mean_xt = (1 - previous) * (1 - self.betas).sqrt() / (1 - self.alphas_cumprod)

    def to(self, device: str | torch.device) -> NoiseSchedule:
        """Move the tables to where the training tensors live (timesteps index them there)."""
        for name in (
            "betas",
            "alphas_cumprod",
            "alphas_cumprod_prev",
            "posterior_log_variance",
            "posterior_mean_x0",
            "posterior_mean_xt",
        ):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def sample_timesteps(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.num_train_timesteps, (batch,), generator=generator)

    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return table[t].float().reshape(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._at(self.alphas_cumprod, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def min_snr_weight(self, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
        """Min-SNR-γ loss weights for a noise prediction (Hang et al. 2023): faster convergence
        by not letting the easy, nearly noise-free timesteps dominate."""
        a = self.alphas_cumprod[t]
        snr = a / (1 - a)
        return (snr.clamp(max=gamma) / snr).float()

    def variance_bound(
        self,
        x_t: torch.Tensor,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise_pred: torch.Tensor,
        variance_pred: torch.Tensor,
    ) -> torch.Tensor:
        """Per-sample KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits per dimension.

        The mean comes from the (detached) noise prediction, so this term trains only the
        learned-range variance, interpolated as `UnCLIPScheduler` does between beta and the
        posterior variance.
        """
        a = self._at(self.alphas_cumprod, t, x0)
        x0_pred = (x_t - (1 - a).sqrt() * noise_pred.detach()) / a.sqrt()
        c0 = self._at(self.posterior_mean_x0, t, x0)
        ct = self._at(self.posterior_mean_xt, t, x0)
        true_mean = c0 * x0 + ct * x_t
        model_mean = c0 * x0_pred + ct * x_t
        true_log_var = self._at(self.posterior_log_variance, t, x0)
        max_log = self._at(torch.log(self.betas), t, x0)
        frac = (variance_pred + 1) / 2
        model_log_var = frac * max_log + (1 - frac) * true_log_var
        kl = 0.5 * (
            -1.0
            + model_log_var
            - true_log_var
            + torch.exp(true_log_var - model_log_var)
            + (true_mean - model_mean) ** 2 * torch.exp(-model_log_var)
        )
        return kl.flatten(1).mean(1) / math.log(2.0)


class EMA:
    """Exponential moving average of a set of modules' parameters (what gets shipped)."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float) -> None:
        self.decay = decay
        self.shadow = {
            f"{name}.{key}": value.detach().clone().float()
            for name, module in modules.items()
            for key, value in module.state_dict().items()
        }

    @torch.no_grad()
    def update(self, modules: dict[str, torch.nn.Module], step: int) -> None:
        # Warm up the decay so early averages are not dominated by the random initialisation.
        decay = min(self.decay, (1 + step) / (10 + step))
        floats, targets = [], []
        for name, module in modules.items():
            for key, value in module.state_dict().items():
                shadow = self.shadow[f"{name}.{key}"]
                if value.dtype.is_floating_point:
                    floats.append(shadow)
                    targets.append(value.float())
                else:
                    shadow.copy_(value)
        # One fused update over every tensor: on a GPU a per-tensor loop costs a launch each.
        torch._foreach_lerp_(floats, targets, 1 - decay)

    def module_state(self, name: str) -> dict[str, torch.Tensor]:
        prefix = f"{name}."
        return {key[len(prefix) :]: value for key, value in self.shadow.items() if key.startswith(prefix)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        # Checkpoints load onto the CPU; the average lives where its modules' parameters do.
        self.shadow = {key: value.float().to(self.shadow[key].device) for key, value in state.items()}
