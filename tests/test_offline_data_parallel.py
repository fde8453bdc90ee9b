"""Data-parallel offline agents on 4 fake CPU devices equal their one-device runs.

CPL's pair batch, P-IQL's transition and pair batches and the evaluation episodes are split over
the mesh's `data` axis (`batch_constraint`); the dataset is replicated. As for PPO
(`test_data_parallel.py`), not bitwise: the gradient's partial sums are all-reduced in another
order, so the runs agree to float32 rounding over a few gradient steps.
"""

import textwrap

from cpu_devices import FAST_COMPILE_FLAGS, run_on_cpu_devices

OFFLINE_DATA_PARALLEL = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jaxrl_si import data as offline
    from jaxrl_si.agents.cpl import CPL, CPLConfig, CPLHyperparams
    from jaxrl_si.agents.piql import PIQL, PIQLConfig, PIQLHyperparams
    from jaxrl_si.parallel import batch_constraint, make_mesh

    E, T, L = 6, 200, 16  # random Pendulum-shaped episodes: obs 3, action 1, 3 reward features
    rng = np.random.default_rng(0)
    flags = lambda t: np.broadcast_to(np.arange(T) == t, (E, T))
    episodes = offline.Episodes(
        observation=rng.normal(size=(E, T, 3)).astype(np.float32), action=rng.uniform(-1, 1, (E, T, 1)).astype(np.float32),
        reward=rng.normal(size=(E, T)).astype(np.float32), discount=np.ones((E, T), np.float32),
        is_first=flags(0), is_last=flags(T - 1), is_terminal=np.zeros((E, T), bool),
        features=rng.normal(size=(E, T, 3)).astype(np.float32), oracle_advantage=rng.normal(size=(E, T)).astype(np.float32),
        length=np.full(E, T, np.int32), policy=np.zeros(E, np.int32),
    )
    episode, start = offline.segment_starts(episodes.length, L, L)
    pairs = offline.Pairs(np.arange(0, 20, 2, dtype=np.int32), np.arange(1, 21, 2, dtype=np.int32), rng.integers(0, 2, 10).astype(np.float32))
    data = jax.device_put(offline.OfflineData(episodes, offline.Segments(episode, start, L), pairs))
    sizes = dict(hidden_sizes=(16,), batch_size=8, total_steps=6, steps_per_update=3, eval_episodes=4)
    agents = [
        (CPL, CPLConfig(**sizes, bc_steps=2, lr_warmup_steps=2), CPLHyperparams()),
        (PIQL, PIQLConfig(**sizes, pair_mode="sparse", critic_hidden_sizes=(16,), reward_model_hidden_sizes=(16,), reward_model_steps=3), PIQLHyperparams()),
    ]
    for build_type, config, hparams in agents:
        hparams = jax.tree.map(jnp.float32, hparams)
        reference = jax.jit(build_type.build(config, data=data).train)(hparams, jax.random.key(0))
        mesh = make_mesh(1, 4)
        agent = build_type.build(config, data=data, constrain=batch_constraint(mesh))
        assert agent.data_parallel_sizes and all(size % 4 == 0 for size in agent.data_parallel_sizes.values())
        state, metrics = jax.jit(agent.train)(hparams, jax.random.key(0))
        for a, b in zip(jax.tree.leaves((state.params, metrics)), jax.tree.leaves((reference[0].params, reference[1])), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
        assert "sharding_constraint" in str(jax.make_jaxpr(agent.train)(hparams, jax.random.key(0)))
    print("OK")
    """
)


def test_offline_agents_split_over_data_equal_one_device():
    run_on_cpu_devices(OFFLINE_DATA_PARALLEL, devices=4, xla_flags=FAST_COMPILE_FLAGS)  # compile-bound
