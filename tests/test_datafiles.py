"""Tests of nnjax.datafiles: .npz and .csv data files read safely, malformed ones refused."""

import hashlib
import io
import zipfile

import numpy as np
import pytest

from nnjax import datafiles


def test_a_csv_and_an_npz_give_the_same_arrays_and_the_hash_of_their_bytes(tmp_path):
    x = np.array([[1.0, -2.5], [3.0, 4.0], [0.5, 6.0]])
    y = np.array([0, 1, 1])
    np.savez(tmp_path / "data.npz", x=x, y=y)
    # The label column in the middle, spaces and a byte-order mark, a blank line.
    text = "\ufeffa, label ,b\n1,0,-2.5\n3, 1,4\n\n0.5,1,6e0\n"
    (tmp_path / "data.csv").write_text(text, encoding="utf-8")
    for name, label_column in (("data.npz", None), ("data.csv", "label")):
        read = datafiles.read_data_file(tmp_path / name, label_column)
        np.testing.assert_array_equal(read.x, x)
        np.testing.assert_array_equal(read.y, y)
        assert read.sha256 == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    last = datafiles.read_data_file(tmp_path / "data.csv")  # default: the last column
    np.testing.assert_array_equal(last.y, [-2.5, 4.0, 6.0])


def _crafted_npz(shape):
    """A .npz whose x.npy declares ``shape`` but holds 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    y = io.BytesIO()
    np.save(y, np.zeros(3))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x.npy", header.getvalue() + bytes(16))
        z.writestr("y.npy", y.getvalue())
    return archive.getvalue()


def _npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


MALFORMED = [
    ("a.csv", "a,b\n1,2\n3\n", "line 3 has 1 columns, the header 2"),
    ("a.csv", "a,b\n1,2\n3,x\n", "line 3, column 'b': 'x' is not a number"),
    ("a.csv", "1,2\n3,4\n", "the first row must name the columns"),
    ("a.csv", "a,b\n", "no rows of data after the header"),
    ("a.csv", "a,b\n1,nan\n", "y holds non-finite values"),
    ("a.csv", "y\n1\n", "no inputs beside the labels"),
    ("a.csv", b"a,b\n\xff,2\n", "not UTF-8 text"),
    ("a.txt", "a,b\n1,2\n", "expected a .npz or .csv data file"),
    ("a.npz", b"not a zip", "not a readable .npz file"),
    ("a.npz", _npz(x=np.zeros((2, 1)), z=np.zeros(2)), r"no array named y; it holds \['x', 'z'\]"),
    ("a.npz", _npz(x=np.array([None, 1]), y=np.zeros(2)), "dtype object; only numbers are read"),
    ("a.npz", _npz(x=np.zeros((3, 2)), y=np.zeros(4)), "x has 3 rows but y has 4"),
    ("a.npz", _npz(x=np.zeros(3), y=np.zeros(3)), r"x must have shape \(n_samples, n_features\)"),
    ("a.npz", _crafted_npz((10**12,)), r"declares shape \(1000000000000,\), more than its"),
]


@pytest.mark.parametrize(("name", "content", "message"), MALFORMED)
def test_a_malformed_file_is_a_one_line_error_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        datafiles.read_data_file(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_size_limits_apply_to_the_file_and_to_the_decompressed_arrays(tmp_path):
    np.savez_compressed(tmp_path / "zeros.npz", x=np.zeros((100, 10)), y=np.zeros(100))
    assert (tmp_path / "zeros.npz").stat().st_size < 2_000  # compresses well
    with pytest.raises(ValueError, match=r"take [0-9,]+ bytes decompressed, beyond the limit of"):
        datafiles.read_data_file(tmp_path / "zeros.npz", max_bytes=5_000)
    with pytest.raises(ValueError, match="is larger than the limit of 100 bytes"):
        datafiles.read_data_file(tmp_path / "zeros.npz", max_bytes=100)


def test_label_columns_are_checked(tmp_path):
    (tmp_path / "a.csv").write_text("a,b,a\n1,2,3\n")
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 1)), y=np.zeros(2))
    with pytest.raises(ValueError, match="the label column 'c' is not among"):
        datafiles.read_data_file(tmp_path / "a.csv", "c")
    with pytest.raises(ValueError, match="the label column 'a' is twice"):
        datafiles.read_data_file(tmp_path / "a.csv", "a")
    with pytest.raises(ValueError, match="it has no label column"):
        datafiles.read_data_file(tmp_path / "a.npz", "y")
    with pytest.raises(ValueError, match=r"cannot read .*: No such file"):
        datafiles.read_data_file(tmp_path / "missing.csv")
