"""Exact targets of a class-conditional learned prior over the world's references.

A class table (duck-typed: ``prompts``, ``null``, ``labels(prompt, azimuth [N]) -> [N]``; the
learned prior's ``priors.learned_classes.ClassTable``) labels every reference of every
prompt by the azimuth of its camera. Class k's exact noise prediction is the mixture
denoiser over its references (uniform weights, tau = 0):

    eps*_k(x_t) = (x_t - alpha_t E_k[x_0 | x_t]) / sigma_t,
    E_k[x_0 | x_t] = sum_{i in k} softmax_i(-||x_t - alpha_t x_i||^2 / (2 sigma_t^2)) x_i

and the null class's the mixture over every reference, uniform over prompts (each prompt's
references share weight 1 / P). Every instance the world exposes for a prompt is one of its
references.
"""

from __future__ import annotations

import torch

from world.prior import mixture_posterior_mean


def direction_azimuth(directions: torch.Tensor) -> torch.Tensor:
    """Azimuth in degrees of unit view directions [N, 3] (origin -> camera, z up).

    >>> direction_azimuth(torch.tensor([[0.0, 1.0, 0.0]])).tolist()
    [90.0]
    """
    return torch.rad2deg(torch.atan2(directions[:, 1], directions[:, 0]))


class ExactTargets:
    """eps*_k(x_t) of every class k of ``table`` over ``references`` (prompt -> an object
    with ``images`` [N, D] and ``directions`` [N, 3], e.g. WorldPrior.references).

    Attributes:
        images: [N, D] all references ([-1, 1], flattened), prompt by prompt.
        prompt_of: [N] prompt index; labels: [N] class label of each reference.
        alphas_cumprod: [T].
    """

    def __init__(self, table, references, alphas_cumprod: torch.Tensor):
        images, prompt_of, labels = [], [], []
        for p, prompt in enumerate(table.prompts):
            refs = references[prompt]
            images.append(refs.images)
            prompt_of.append(torch.full((refs.images.shape[0],), p, dtype=torch.int64))
            labels.append(table.labels(prompt, direction_azimuth(refs.directions)))
        self.table = table
        self.images = torch.cat(images).to(torch.float32)
        self.prompt_of = torch.cat(prompt_of)
        self.labels = torch.cat(labels)
        self.alphas_cumprod = alphas_cumprod.to(torch.float32)
        counts = torch.bincount(self.prompt_of, minlength=len(table.prompts)).to(torch.float32)
        # null class: uniform over prompts, uniform over each prompt's references
        self._null_log_prior = -counts.log()[self.prompt_of]

    def log_prior(self, labels: torch.Tensor) -> torch.Tensor:
        """[B, N] log mixture weights (up to a constant) of each label's references
        (-1e30 outside the class)."""
        member = labels[:, None] == self.labels[None, :]
        null = (labels == self.table.null)[:, None]
        out = torch.where(member, 0.0, -1e30)  # finite: an all-outside chunk stays NaN-free
        return torch.where(null, self._null_log_prior[None, :].expand_as(out), out)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Exact eps*_k(x_t) for x_t [B, 3, H, W], t [B], labels [B] -> [B, 3, H, W]."""
        abar = self.alphas_cumprod[t]
        alpha, sigma = abar.sqrt(), (1.0 - abar).sqrt()
        x0 = mixture_posterior_mean(
            x_t.flatten(1),
            alpha,
            sigma,
            self.images,
            self.log_prior(labels),
            chunk_size=self.images.shape[0],
        )
        shape = (-1, 1, 1, 1)
        return (x_t - alpha.view(shape) * x0.view_as(x_t)) / sigma.view(shape)

    def sample(self, n: int, generator: torch.Generator, prompt: int | None = None):
        """n references, uniform over prompts (or of prompt ``prompt``) then uniform within:
        returns (x_0 [n, 3, H, W] flattened view of images, labels [n], prompt index [n])."""
        n_prompts = len(self.table.prompts)
        if prompt is None:
            prompts = torch.randint(n_prompts, (n,), generator=generator)
        else:
            prompts = torch.full((n,), prompt, dtype=torch.int64)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        starts = torch.searchsorted(self.prompt_of, torch.arange(n_prompts))
        counts = torch.bincount(self.prompt_of, minlength=n_prompts)
        index = starts[prompts] + (u * counts[prompts]).long().clamp_max(counts[prompts] - 1)
        return self.images[index], self.labels[index], prompts
