"""The one atomic writer (`files.write_atomically`) that results, metrics and predict use."""

import os

import pytest

from cwt_jax import files


def test_a_failed_write_leaves_the_file_as_it_was_and_no_temporary_file(tmp_path):
    path = tmp_path / "results.json"
    files.write_atomically(str(path), b"first")
    files.write_atomically(str(path), b"second")
    assert path.read_bytes() == b"second"
    with pytest.raises(TypeError):
        files.write_atomically(str(path), "not bytes")  # fails once the file is open
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["results.json"]
