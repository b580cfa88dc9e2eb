"""Every VTAB-1k loader on small fake data written in the dataset's real on-disk format."""

from __future__ import annotations

import numpy as np
import pytest

from hgprompt_ray.data import TaskUnavailableError, get_task
from hgprompt_ray.data.vtab import VTAB_TASKS
from tests.data import fake_vtab

WRITERS = {
    "cifar100": (fake_vtab.write_cifar100, 60),
    "svhn": (fake_vtab.write_svhn, 40),
    "flowers102": (fake_vtab.write_flowers102, 80),
    "dtd": (fake_vtab.write_dtd, 12 * 47),
    "pets": (fake_vtab.write_pets, 40),
    "eurosat": (fake_vtab.write_eurosat, 260),
    "caltech101": (fake_vtab.write_caltech101, 70),
    "sun397": (fake_vtab.write_sun397, 260),
    "pcam": (fake_vtab.write_pcam, 30),
    "clevr-count": (fake_vtab.write_clevr, 30),
}


def test_every_vtab_task_has_a_test_here():
    covered = set(WRITERS) | {"dsprites-loc", "dsprites-ori", "smallnorb-azi", "smallnorb-ele"}
    assert covered == set(VTAB_TASKS)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_loader_on_fake_files(tmp_path, name):
    write, test_size = WRITERS[name]
    task = get_task(name, data_root=tmp_path)
    assert task.availability()[0] is False
    write(tmp_path)
    assert task.availability() == (True, "")
    train, val = task.split("train800", seed=3), task.split("val200", seed=3)
    both, test = task.split("train800val200", seed=3), task.split("test")
    assert (len(train), len(val), len(both), len(test)) == (800, 200, 1000, test_size)
    np.testing.assert_array_equal(both.labels, np.concatenate([train.labels, val.labels]))
    assert train.labels.max() < task.info.num_classes and train.labels.min() >= 0
    # Images and labels stay paired: each fake image's colour encodes its label.
    for split in (train, val, test):
        for index in np.linspace(0, len(split) - 1, 6).astype(int):
            assert fake_vtab.label_of(split.image(int(index))) == split.labels[index]
    # Deterministic for a seed, different for another.
    np.testing.assert_array_equal(task.split("train800", seed=3).labels, train.labels)
    assert not np.array_equal(task.split("train800", seed=4).labels, train.labels)


@pytest.mark.parametrize(("name", "column", "bins"), [("dsprites-loc", 4, 2), ("dsprites-ori", 3, None)])
def test_dsprites_official_npz(tmp_path, name, column, bins):
    classes = fake_vtab.write_dsprites(tmp_path)
    task = get_task(name, data_root=tmp_path)
    train, test = task.split("train800"), task.split("test")
    assert len(train) == 800 and len(test) == 260 and task.info.num_classes == 16
    expected = classes[:, column] // 2 if bins else (classes[:, column] * 16) // 40
    for split in (train, test):
        for index in range(0, len(split), 97):
            pixels = np.asarray(split.image(index).convert("L"))
            y, x = np.argwhere(pixels == 255)[0]
            row = np.flatnonzero((classes[:, 4] == x // 2) & (classes[:, 5] == y // 2))
            assert split.labels[index] in set(expected[row])


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize(("name", "factor"), [("smallnorb-azi", "azimuth"), ("smallnorb-ele", "elevation")])
def test_smallnorb_binary_matrices(tmp_path, name, factor, gzipped):
    fake_vtab.write_smallnorb(tmp_path, gzipped=gzipped)
    task = get_task(name, data_root=tmp_path)
    train, test = task.split("train800"), task.split("test")
    assert (len(train), len(test)) == (800, 30)
    for split in (train, test):
        for index in range(0, len(split), 50):
            pixels = np.asarray(split.image(index).convert("L"))
            elevation, azimuth = int(pixels[0, 0]), int(pixels[0, 1])
            assert split.labels[index] == (azimuth // 2 if factor == "azimuth" else elevation)


def test_missing_data_names_root_and_flag_and_downloads_nothing(tmp_path):
    task = get_task("svhn", data_root=tmp_path)
    with pytest.raises(TaskUnavailableError, match=rf"no svhn data under {tmp_path}.*--download"):
        task.split("train800")
    assert list(tmp_path.iterdir()) == []


def test_truncated_norb_file_is_reported(tmp_path):
    fake_vtab.write_smallnorb(tmp_path)
    path = next((tmp_path / "smallnorb").glob("*training-info.mat"))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ValueError, match="truncated"):
        get_task("smallnorb-azi", data_root=tmp_path).split("train800")


def test_pickled_task_leaves_its_loaded_pools_behind(tmp_path):
    """Extraction ships the resolved task to its workers: it must not carry the decoded images."""
    from ray import cloudpickle

    fake_vtab.write_cifar100(tmp_path)
    task = get_task("cifar100", data_root=tmp_path)
    train = task.split("train800", seed=3)
    blob = cloudpickle.dumps(task)
    assert len(blob) < 20_000 and task._cache  # the driver's copy keeps its memo
    copy = cloudpickle.loads(blob)
    assert copy._cache == {}
    np.testing.assert_array_equal(copy.split("train800", seed=3).labels, train.labels)
    assert fake_vtab.label_of(copy.split("train800", seed=3).image(7)) == train.labels[7]
