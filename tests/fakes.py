"""Small deterministic stand-ins for tests."""

from core.interfaces import DiffusionPrior
from core.schedule import ddpm_alphas_cumprod


class LinearPrior(DiffusionPrior):
    """eps_c(x_t) = a_c x_t + b_c, eps_u(x_t) = a_u x_t + b_u (pixel space [-1, 1])."""

    def __init__(self, a_c=0.3, b_c=0.1, a_u=-0.2, b_u=0.05):
        super().__init__()
        self.alphas_cumprod = ddpm_alphas_cumprod()
        self.coef = {True: (a_c, b_c), False: (a_u, b_u)}

    def encode(self, rgb):
        return rgb * 2 - 1

    def _predict_branch(self, x_t, t, ctx, conditional):
        a, b = self.coef[conditional]
        return a * x_t + b
