import pytest

from sampling_toys import GaussianData


@pytest.fixture
def gaussian():
    return GaussianData()
