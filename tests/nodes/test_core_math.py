"""IntMath / FloatMath on values that overflow: a clear error naming the node and the input, at once."""
import signal

import pytest

from vidgraph.nodes.core import FloatMath, IntMath
from vidgraph.nodes.common import NodeInputError


@pytest.fixture
def within_two_seconds():
    """A calculation that hangs the worker fails the test instead of the whole run."""
    def expired(signum, frame):
        raise TimeoutError("the calculation took more than 2 s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(2)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("a, b, op", [
    (3, 10 ** 12, "power"),            # would build a number of 10**12 digits: hangs the worker
    (2, 64, "power"), (2 ** 62, 4, "multiply"), (-(2 ** 63), -1, "divide"), (2 ** 63 - 1, 1, "add"),
    (0, -1, "power"),
])
def test_int_math_refuses_results_outside_the_int_range(within_two_seconds, a, b, op):
    with pytest.raises(NodeInputError) as caught:
        IntMath().calculate(a, b, op)
    assert str(caught.value).startswith("IntMath: input '")


@pytest.mark.parametrize("a, b, op", [(10.0, 400.0, "power"), (-8.0, 0.5, "power"), (0.0, -1.0, "power"),
                                      (1e308, 10.0, "multiply")])
def test_float_math_refuses_results_that_are_not_finite_real_numbers(a, b, op):
    with pytest.raises(NodeInputError) as caught:
        FloatMath().calculate(a, b, op)
    assert str(caught.value).startswith("FloatMath: input '")


@pytest.mark.parametrize("node, a, b, op, expected", [
    (IntMath, 2, 62, "power", 2 ** 62), (IntMath, -2, 61, "power", -(2 ** 61)),
    (IntMath, 2, -1, "power", 0), (IntMath, 1, 10 ** 12, "power", 1), (IntMath, -1, 10 ** 12 + 1, "power", -1),
    (IntMath, 0, 10 ** 12, "power", 0), (FloatMath, 2.0, 0.5, "power", 2.0 ** 0.5),
])
def test_math_in_range_still_computes(node, a, b, op, expected):
    assert node().calculate(a, b, op) == (expected,)
