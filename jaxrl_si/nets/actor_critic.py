"""Actor-critic networks for on-policy agents (PPO, REINFORCE)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxrl_si.nets.distributions import Categorical, DiagGaussian, TanhGaussian
from jaxrl_si.nets.mlp import MLP, flatten_observation

POLICY_KINDS = ("categorical", "gaussian", "tanh_gaussian")


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs on the same observation.

    The actor's last layer has gain 0.01 (near-uniform initial policy) and the critic's 1.0, as
    in the PPO implementation study of Andrychowicz et al. 2021 (arXiv 2006.05990). Gaussian
    policies have a state-independent, learned log standard deviation.

    Shapes: `obs [..., *obs_shape]` -> (distribution over `[...]`, value `[...]`).
    """

    action_size: int  # number of discrete actions, or dimension of a continuous action
    policy_kind: str = "categorical"  # one of POLICY_KINDS
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    obs_ndim: int = 1  # trailing observation axes flattened into features (3 for images)
    init_log_std: float = 0.0

    @nn.compact
    def __call__(self, obs: Float[Array, "..."]):
        if self.policy_kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy_kind {self.policy_kind!r}; choose one of {POLICY_KINDS}")
        x = flatten_observation(obs.astype(jnp.float32), self.obs_ndim)
        actor_out = MLP(self.hidden_sizes, self.action_size, self.activation, output_scale=0.01, name="actor")(x)
        value = MLP(self.hidden_sizes, 1, self.activation, output_scale=1.0, name="critic")(x)[..., 0]
        if self.policy_kind == "categorical":
            return Categorical(actor_out), value
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.action_size,))
        log_std = jnp.broadcast_to(log_std, actor_out.shape)
        dist_cls = DiagGaussian if self.policy_kind == "gaussian" else TanhGaussian
        return dist_cls(actor_out, log_std), value
