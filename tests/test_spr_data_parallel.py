"""Data-parallel SPR on 8 fake CPU devices equals the one-device run.

The rows of every sampled batch are split over the mesh's `data` axis (the buffer, the sum tree
and the environments are replicated): each device encodes, unrolls and differentiates its rows,
XLA all-reduces the gradients and the batch statistics (the transition model's BatchNorm, the
largest importance weight), so the run equals the one-device run up to the order of float sums.
"""

import textwrap

from cpu_devices import FAST_COMPILE_FLAGS, run_on_cpu_devices

DATA_PARALLEL = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jaxrl_si.agents.spr import SPR, SPRConfig, SPRHyperparams
    from jaxrl_si.parallel import batch_constraint, make_mesh

    config = SPRConfig(env="gymnax:Breakout-MinAtar", num_envs=2, total_env_steps=2 * 8 * 2, steps_per_update=8,
                       learning_starts=8, batch_size=8, hidden=16, n_step=3, spr_steps=2, shift_pad=1, eval_steps=0)
    hparams = SPRHyperparams()
    key = jax.random.key(0)
    ref_state, ref_metrics = jax.jit(SPR.build(config).train)(hparams, key)
    assert float(ref_metrics["learn/gradient_steps"].sum()) > 0
    mesh = make_mesh(1, 8)
    compiled = jax.jit(SPR.build(config, constrain=batch_constraint(mesh)).train).lower(hparams, key).compile()
    state, metrics = compiled(hparams, key)
    for a, b in zip(jax.tree.leaves((state.params, state.replay, metrics)), jax.tree.leaves((ref_state.params, ref_state.replay, ref_metrics)), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-4, atol=1e-5)
    hlo = compiled.as_text()
    assert "all-reduce" in hlo, "no gradient all-reduce"
    print("OK")
    """
)


def test_data_parallel_spr_equals_one_device():
    run_on_cpu_devices(DATA_PARALLEL, xla_flags=FAST_COMPILE_FLAGS)  # compile time dominates
