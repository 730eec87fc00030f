"""Shared fixtures: the real test material in ../shared/testdata."""

import os
import pathlib

import pytest

TESTDATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> pathlib.Path:
    """Path of ../shared/testdata; missing is a failure under CI (CI=true), a skip elsewhere."""
    if not TESTDATA.is_dir():
        message = f"test data not found at {TESTDATA} (expected ../shared/testdata beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return TESTDATA
