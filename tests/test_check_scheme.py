"""The public contract checker (research/analysis/contract.py, scripts/check_scheme.py) on schemes that live in a
package of their own, outside the repository: a correct one passes, and each deliberately broken one fails with the
contract it breaks named, through the function, the pytest helper and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from research.analysis.contract import CONTRACTS, ContractFailure, check_scheme, contract_tests, results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PACKAGE = {
    "__init__.py": "",
    "gauss.py": '''
        """A Gaussian distance bias: -(i - j)^2 / (2 sigma_h^2), sigma learned per head (an illustration)."""
        import dataclasses

        import jax.numpy as jnp
        from flax import nnx

        from research.positional.base import PositionalConfig, PositionalEncoding


        @dataclasses.dataclass(frozen=True, kw_only=True)
        class GaussConfig(PositionalConfig):
            init_sigma: float = 4.0

            def build(self, dims, *, rngs):
                return Gauss(dims.num_heads, self.init_sigma)


        class Gauss(PositionalEncoding):
            shared_bias = True

            def __init__(self, heads, sigma):
                self.log_sigma = nnx.Param(jnp.full((heads,), jnp.log(sigma), jnp.float32))

            def bias(self, q_pos, k_pos, *, layer, q=None, k=None, logits=None):
                d = (q_pos[:, :, None] - k_pos[:, None, :]).astype(jnp.float32)  # [B,T,S]
                sigma = jnp.exp(self.log_sigma[...])  # [H]
                return -(d[:, None] ** 2) / (2 * sigma[None, :, None, None] ** 2)  # [B,H,T,S]
    ''',
    "broken.py": '''
        """Three ways to break the contract."""
        import dataclasses

        import jax.numpy as jnp

        from research.positional.base import PositionalConfig, PositionalEncoding


        def distance(q_pos, k_pos):
            return (q_pos[:, :, None] - k_pos[:, None, :]).astype(jnp.float32)  # [B,T,S]


        @dataclasses.dataclass(frozen=True, kw_only=True)
        class WrongShapeConfig(PositionalConfig):
            def build(self, dims, *, rngs):
                return WrongShape()


        class WrongShape(PositionalEncoding):
            def bias(self, q_pos, k_pos, *, layer, q=None, k=None, logits=None):
                return -distance(k_pos, q_pos)[:, None]  # [B,1,S,T]: keys and queries swapped, no head axis


        @dataclasses.dataclass(frozen=True, kw_only=True)
        class NotRelativeConfig(PositionalConfig):  # claims relative = True (the default)
            def build(self, dims, *, rngs):
                return NotRelative()


        class NotRelative(PositionalEncoding):
            def bias(self, q_pos, k_pos, *, layer, q=None, k=None, logits=None):
                return -0.1 * q_pos.astype(jnp.float32)[:, None, :, None] + 0 * distance(q_pos, k_pos)[:, None]


        @dataclasses.dataclass(frozen=True, kw_only=True)
        class LyingSharedConfig(PositionalConfig):
            def build(self, dims, *, rngs):
                return LyingShared()


        class LyingShared(PositionalEncoding):
            shared_bias = True  # but the bias depends on the layer

            def bias(self, q_pos, k_pos, *, layer, q=None, k=None, logits=None):
                return -(1.0 + layer) * jnp.abs(distance(q_pos, k_pos))[:, None]
    ''',
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """`my_schemes` in a temporary folder on sys.path (and PYTHONPATH for subprocesses), never in the project."""
    root = tmp_path_factory.mktemp("outside")
    (root / "my_schemes").mkdir()
    for name, text in PACKAGE.items():
        (root / "my_schemes" / name).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


BROKEN = {
    "my_schemes.broken:WrongShapeConfig": "shapes and dtypes",
    "my_schemes.broken:NotRelativeConfig": "shift behaviour",
    "my_schemes.broken:LyingSharedConfig": "shared_bias true to the hook",
}


def test_a_scheme_outside_the_repository_meets_every_contract(package):
    check_scheme("my_schemes.gauss:GaussConfig@init_sigma=4")
    assert all(reason is None for _, reason in results("my_schemes.gauss:GaussConfig"))


@pytest.mark.parametrize("scheme", sorted(BROKEN))
def test_a_broken_scheme_fails_with_the_contract_named(package, scheme):
    with pytest.raises(ContractFailure) as failure:
        check_scheme(scheme)
    message = str(failure.value)
    assert f"- {scheme}: contract '{BROKEN[scheme]}' failed: " in message
    failed = {name for name, reason in results(scheme) if reason is not None}
    assert BROKEN[scheme] in failed and failed < set(CONTRACTS)


def test_the_pytest_helper_parametrizes_by_contract(package):
    test = contract_tests("my_schemes.gauss:GaussConfig", "my_schemes.broken:NotRelativeConfig")
    marks = {m.args[0]: m.args[1] for m in test.pytestmark}
    assert marks["contract"] == list(CONTRACTS) and len(marks["scheme"]) == 2
    test("my_schemes.gauss:GaussConfig", "causal")
    with pytest.raises(ContractFailure, match="contract 'shift behaviour' failed"):
        test("my_schemes.broken:NotRelativeConfig", "shift behaviour")


def test_the_command_line_prints_a_line_per_contract(package):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), REPO, os.environ.get("PYTHONPATH", "")]))
    script = os.path.join(REPO, "scripts", "check_scheme.py")
    good = subprocess.run([sys.executable, script, "my_schemes.gauss:GaussConfig"], capture_output=True, text=True,
                          env=env)  # fmt: skip
    assert good.returncode == 0, good.stderr[-2000:]
    assert good.stdout.count(": ok") == len(CONTRACTS) and "every contract met" in good.stdout
    bad = subprocess.run([sys.executable, script, "my_schemes.broken:LyingSharedConfig"], capture_output=True,
                         text=True, env=env)  # fmt: skip
    assert bad.returncode == 1
    assert "my_schemes.broken:LyingSharedConfig: shared_bias true to the hook: FAILED: " in bad.stdout
    typo = subprocess.run([sys.executable, script, "my_schemes.gaus:GaussConfig"], capture_output=True, text=True,
                          env=env)  # fmt: skip
    assert typo.returncode == 2 and "cannot import 'my_schemes.gaus'" in typo.stderr
