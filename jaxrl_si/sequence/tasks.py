"""Tasks with checkable answers for a small sequence model: a vocabulary, prompts and answers.

A task samples `Problems` (prompts and their one right answer) as a pure function of a key,
so `jit(vmap(task.sample))` draws problems for many seeds at once. Every task here is fixed
width: each prompt has `prompt_length` tokens and each answer `answer_length`, and a model
answers with `max_new_tokens = answer_length + 1` tokens, the answer then EOS.

| name       | prompt (digits=3 / length=5) | answer  | what the model must learn            |
|------------|------------------------------|---------|--------------------------------------|
| `addition` | `123+456=`                   | `0579`  | a + b, digit by digit with carries   |
| `sort`     | `31415>`                     | `11345` | the prompt's digits in ascending order |

Operands and answers are zero-padded to a fixed width, so that answer position i always holds
the same digit place (`judges` scores per position). The addition answer is written most
significant digit first, as people write it; a left-to-right model must then resolve the carry
chain before it emits the first digit, which is what makes the task hard for it (Lee et al.
2023, "Teaching Arithmetic to Small Transformers", arXiv 2307.03381, compare reversed answers).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int, PRNGKeyArray

from jaxrl_si import _checks
from jaxrl_si.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token ids: PAD = 0, EOS = 1, then one id per character of `characters`, in order.

    >>> VOCAB.encode("12+3=")
    array([ 3,  4, 12,  5, 13], dtype=int32)
    >>> VOCAB.decode([3, 4, 12, 5, 13, VOCAB.eos_id, 7, VOCAB.pad_id])
    '12+3='
    """

    characters: str = "0123456789+=>,"
    pad_id: ClassVar[int] = 0
    eos_id: ClassVar[int] = 1
    num_special: ClassVar[int] = 2

    def __post_init__(self):
        if len(set(self.characters)) != len(self.characters):
            raise ConfigError(f"Vocabulary.characters must not repeat a character, got {self.characters!r}.")

    @property
    def size(self) -> int:
        return self.num_special + len(self.characters)

    def token_id(self, character: str) -> int:
        """The id of one character; `ArgumentValueError` if it is not in the vocabulary."""
        index = self.characters.find(character)
        if len(character) != 1 or index < 0:
            raise _checks.ArgumentValueError(
                f"`character` {character!r} is not in the vocabulary; characters: {self.characters!r}."
            )
        return self.num_special + index

    def encode(self, text: str) -> np.ndarray:
        """`[len(text)]` int32 ids of the characters of `text` (no EOS is added)."""
        unknown = sorted(set(text) - set(self.characters))
        if unknown:
            raise _checks.ArgumentValueError(
                f"`text` {text!r} has characters {unknown} that are not in the vocabulary; "
                f"characters: {self.characters!r}."
            )
        return np.asarray([self.token_id(c) for c in text], dtype=np.int32)

    def decode(self, ids) -> str:
        """The text of a 1-D sequence of ids up to its first EOS, with PAD skipped."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise _checks.ArgumentValueError(f"`ids` must be a 1-D integer sequence, got {ids.dtype} shape {ids.shape}.")
        if np.any((ids < 0) | (ids >= self.size)):
            raise _checks.ArgumentValueError(f"`ids` must lie in [0, {self.size}), got {ids.tolist()}.")
        ends = np.flatnonzero(ids == self.eos_id)
        kept = ids[: ends[0] if ends.size else ids.size]
        return "".join(self.characters[i - self.num_special] for i in kept if i != self.pad_id)


VOCAB = Vocabulary()
"""The vocabulary of every task here: 16 tokens, digits at ids 2..11."""

_DIGIT_0 = VOCAB.token_id("0")


class Problems(flax.struct.PyTreeNode):
    """A batch of prompts and their answers.

    prompts:      `[n, Lp]` int32 token ids, left-padded with PAD where a prompt is shorter.
    prompt_valid: `[n, Lp]` bool, False on that padding (all True for the fixed-width tasks here).
    answers:      `[n, A]` int32 the right answer's tokens, without EOS.
    """

    prompts: Int[Array, "n Lp"]
    prompt_valid: Bool[Array, "n Lp"]
    answers: Int[Array, "n A"]


def digit_tokens(values: Int[Array, "*batch"], width: int) -> Int[Array, "*batch width"]:
    """The `width` decimal digits of each non-negative value as tokens, most significant first,
    zero-padded on the left (values ≥ 10^width keep their low `width` digits)."""
    places = 10 ** jnp.arange(width - 1, -1, -1, dtype=jnp.int32)
    return (values[..., None] // places) % 10 + _DIGIT_0


def supervised_targets(problems: Problems) -> tuple[Int[Array, "n A+1"], Bool[Array, "n A+1"]]:
    """The teacher's responses for supervised warm-start: (answer then EOS `[n, A+1]`, all-True mask)."""
    eos = jnp.full((*problems.answers.shape[:-1], 1), VOCAB.eos_id, problems.answers.dtype)
    tokens = jnp.concatenate([problems.answers, eos], axis=-1)
    return tokens, jnp.ones(tokens.shape, bool)


def _fixed_width(prompts: Int[Array, "n Lp"], answers: Int[Array, "n A"]) -> Problems:
    return Problems(prompts.astype(jnp.int32), jnp.ones(prompts.shape, bool), answers.astype(jnp.int32))


def _check_size(owner: str, field: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{owner}.{field} must be an int in [{low}, {high}], got {value!r}.")


def _column(token: int, n: int) -> Int[Array, "n 1"]:
    return jnp.full((n, 1), token, jnp.int32)


@dataclasses.dataclass(frozen=True)
class AdditionTask:
    """`a+b=` → a + b, with a, b ~ U{0, …, 10^digits − 1}; operands `digits` wide, the sum digits + 1.

    >>> problems = AdditionTask(digits=2).sample(jax.random.key(0), 1)
    >>> problems.prompts.shape, problems.answers.shape
    ((1, 6), (1, 3))
    """

    digits: int = 3  # operand width, in [1, 8] (10^8 + 10^8 still fits int32)
    name: ClassVar[str] = "addition"

    def __post_init__(self):
        _check_size("AdditionTask", "digits", self.digits, 1, 8)

    @property
    def prompt_length(self) -> int:
        return 2 * self.digits + 2

    @property
    def answer_length(self) -> int:
        return self.digits + 1

    @property
    def max_new_tokens(self) -> int:
        return self.answer_length + 1

    def sample(self, key: PRNGKeyArray, n: int) -> Problems:
        """`n` problems, prompts `[n, 2·digits + 2]` and answers `[n, digits + 1]`."""
        a, b = jax.random.randint(key, (2, n), 0, 10**self.digits, dtype=jnp.int32)
        prompts = jnp.concatenate(
            [digit_tokens(a, self.digits), _column(VOCAB.token_id("+"), n),
             digit_tokens(b, self.digits), _column(VOCAB.token_id("="), n)],
            axis=-1,
        )
        return _fixed_width(prompts, digit_tokens(a + b, self.answer_length))


@dataclasses.dataclass(frozen=True)
class SortTask:
    """`d_1 … d_length>` → the digits sorted ascending, with d_i ~ U{0, …, 9} independently.

    >>> problems = SortTask(length=4).sample(jax.random.key(0), 2)
    >>> problems.prompts.shape, problems.answers.shape
    ((2, 5), (2, 4))
    """

    length: int = 5  # number of digits to sort, in [2, 12]
    name: ClassVar[str] = "sort"

    def __post_init__(self):
        _check_size("SortTask", "length", self.length, 2, 12)

    @property
    def prompt_length(self) -> int:
        return self.length + 1

    @property
    def answer_length(self) -> int:
        return self.length

    @property
    def max_new_tokens(self) -> int:
        return self.answer_length + 1

    def sample(self, key: PRNGKeyArray, n: int) -> Problems:
        """`n` problems, prompts `[n, length + 1]` and answers `[n, length]`."""
        digits = jax.random.randint(key, (n, self.length), 0, 10, dtype=jnp.int32) + _DIGIT_0
        prompts = jnp.concatenate([digits, _column(VOCAB.token_id(">"), n)], axis=-1)
        return _fixed_width(prompts, jnp.sort(digits, axis=-1))


Task = AdditionTask | SortTask

TASKS: dict[str, type] = {AdditionTask.name: AdditionTask, SortTask.name: SortTask}


def make_task(name: str, size: int | None = None) -> Task:
    """The task `name` with its size (`digits` or `length`; None: the default), or `ConfigError`."""
    if name not in TASKS:
        raise ConfigError(f"unknown sequence task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]() if size is None else TASKS[name](size)
