"""Hypothesis profiles for the fuzz and fault suites, and the check every fuzz target shares.

Two profiles, chosen by the environment variable MICROQWEN_FUZZ:

    (unset) or quick   a few hundred inputs per target: the whole fuzz suite adds well under
                       two minutes to the test run (what CI runs)
    long               thousands of inputs per target, and the fault-injection runs that take
                       minutes (many random kill points); tests that only this profile needs
                       are skipped in the quick one

    MICROQWEN_FUZZ=long python -m pytest -q tests/test_fuzz_*.py tests/test_faults.py \
        --hypothesis-show-statistics

The one rule every fuzz target checks: an input gives a result or a `MicroQwenError` whose
message says something. Any other exception (ValueError, KeyError, RecursionError,
UnicodeError, ...) is a bug: fix it in the module, and keep the input in tests/fuzz_corpus/.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

import pytest
from hypothesis import HealthCheck, settings

from microqwen.errors import MicroQwenError

PROFILE = os.environ.get("MICROQWEN_FUZZ", "quick")
if PROFILE not in ("quick", "long"):
    raise RuntimeError(f"MICROQWEN_FUZZ must be quick or long, got {PROFILE!r}")
LONG = PROFILE == "long"

settings.register_profile(
    "microqwen-fuzz",
    deadline=None,  # a slow example on a busy 2-core machine is not a failure
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],  # scratch directories are emptied by hand
    print_blob=True,  # a failure prints the @reproduce_failure blob to keep in the corpus
)

T = TypeVar("T")


def fuzz(quick: int, long: int) -> Callable[[T], T]:
    """The settings of one fuzz target: `quick` inputs in the quick profile, `long` in the long one."""
    return settings(settings.get_profile("microqwen-fuzz"), max_examples=long if LONG else quick)


long_only = pytest.mark.skipif(not LONG, reason="long profile only: MICROQWEN_FUZZ=long")


def outcome(call: Callable[[], T]) -> T | MicroQwenError:
    """Run `call`; return its result, or the `MicroQwenError` it raised after checking its message.

    Anything else propagates, and fails the test with the input that caused it.
    """
    try:
        return call()
    except MicroQwenError as e:
        check_message(e)
        return e


def check_message(error: MicroQwenError) -> None:
    """A message a user can act on: not empty, and short enough for one line of a terminal log."""
    message = str(error)
    assert message.strip(), f"{type(error).__name__} with an empty message"
    assert len(message) < 2000, f"{type(error).__name__} message of {len(message)} characters"


def repr_short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
