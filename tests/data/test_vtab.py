"""Every VTAB-1k loader on small fake data written in the dataset's real on-disk format, and the
official split definitions (google-research/task_adaptation) they serve."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from hgprompt_ray.data import SPLITS, TaskUnavailableError, get_task
from hgprompt_ray.data.offline import OFFLINE_TASKS
from hgprompt_ray.data.vtab import VTAB_TASKS
from hgprompt_ray.data.vtab import task as vtab_task_module
from hgprompt_ray.errors import InvalidValueError
from tests.data import fake_vtab

# Restated from task_adaptation/data/<file>: (file, val200's part, its start as percents of that
# part, test's part, its start as percents of that part). A start is sum(p * n // 100).
OFFICIAL = {
    "cifar100": ("cifar.py", "train", (90,), "test", ()),
    "svhn": ("svhn.py", "train", (90,), "test", ()),
    "flowers102": ("oxford_flowers102.py", "validation", (), "test", ()),
    "dtd": ("dtd.py", "validation", (), "test", ()),
    "pets": ("oxford_iiit_pet.py", "train", (80,), "test", ()),
    "eurosat": ("eurosat.py", "train", (60,), "train", (60, 20)),
    "caltech101": ("caltech.py", "train", (90,), "test", ()),
    "sun397": ("sun397.py", "validation", (), "test", ()),
    "pcam": ("patch_camelyon.py", "validation", (), "test", ()),
    "clevr-count": ("clevr.py", "train", (90,), "validation", ()),
    "dsprites-loc": ("dsprites.py", "train", (80,), "train", (80, 10)),
    "dsprites-ori": ("dsprites.py", "train", (80,), "train", (80, 10)),
    "smallnorb-azi": ("smallnorb.py", "test", (), "test", (50,)),
    "smallnorb-ele": ("smallnorb.py", "test", (), "test", (50,)),
}

# name: (writer returning {part: labels in file order}, size of the test split on its fake files)
WRITERS = {
    "cifar100": (fake_vtab.write_cifar100, 60),
    "svhn": (fake_vtab.write_svhn, 40),
    "flowers102": (fake_vtab.write_flowers102, 60),
    "dtd": (fake_vtab.write_dtd, 10 * 47),
    "pets": (fake_vtab.write_pets, 40),
    "eurosat": (fake_vtab.write_eurosat, 1400 - 840 - 280),
    "caltech101": (fake_vtab.write_caltech101, 68),
    "sun397": (fake_vtab.write_sun397, 2000 - 1400 - 200),
    "pcam": (fake_vtab.write_pcam, 30),
    "clevr-count": (fake_vtab.write_clevr, 30),
    "dsprites-loc": (lambda root: {"train": fake_vtab.write_dsprites(root)[:, 4] // 2}, 200),
    "dsprites-ori": (lambda root: {"train": fake_vtab.write_dsprites(root)[:, 3] * 16 // 40}, 200),
    "smallnorb-azi": (
        lambda root: {p: i[:, 2] // 2 for p, i in fake_vtab.write_smallnorb(root).items()},
        200,
    ),
    "smallnorb-ele": (lambda root: {p: i[:, 1] for p, i in fake_vtab.write_smallnorb(root).items()}, 200),
}
COLOUR_CODED = set(WRITERS) - {"dsprites-loc", "dsprites-ori", "smallnorb-azi", "smallnorb-ele"}


def _start(count: int, percents: tuple[int, ...]) -> int:
    return sum(p * count // 100 for p in percents)


def test_every_vtab_task_has_a_test_here():
    assert set(OFFICIAL) == set(WRITERS) == set(VTAB_TASKS)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_definition_cites_task_adaptation(name):
    file, val, val_cut, test, test_cut = OFFICIAL[name]
    official = get_task(name).official
    assert official.source == f"task_adaptation/data/{file}"
    assert (official.train, official.val, official.val_cut, official.test, official.test_cut) == (
        "train",
        val,
        val_cut,
        test,
        test_cut,
    )
    assert official.order_matches_tfds is False and official.order_note
    assert get_task(name).info.extra["official_splits"].endswith(f"task_adaptation/data/{file})")


def test_file_order_only_where_the_files_are_not_grouped_by_class():
    """Elsewhere the files are grouped by class or factor (or their order is undocumented), so
    their first 800 would cover few classes: those parts are served in a fixed permutation."""
    in_file_order = {name for name in VTAB_TASKS if get_task(name).official.order == "file"}
    assert in_file_order == {"cifar100", "svhn", "clevr-count"}


@pytest.mark.parametrize(
    ("name", "sizes", "val200", "test"),
    [  # the TFDS split sizes the definitions were written for, and task_adaptation's slices
        ("cifar100", {"train": 50000, "test": 10000}, ("train", 45000, 45200), ("test", 0, 10000)),
        ("svhn", {"train": 73257, "test": 26032}, ("train", 65931, 66131), ("test", 0, 26032)),
        ("pets", {"train": 3680, "test": 3669}, ("train", 2944, 3144), ("test", 0, 3669)),
        ("eurosat", {"train": 27000}, ("train", 16200, 16400), ("train", 21600, 27000)),
        ("caltech101", {"train": 3060, "test": 6084}, ("train", 2754, 2954), ("test", 0, 6084)),
        (
            "clevr-count",
            {"train": 70000, "validation": 15000},
            ("train", 63000, 63200),
            ("validation", 0, 15000),
        ),
        ("dsprites-loc", {"train": 737280}, ("train", 589824, 590024), ("train", 663552, 737280)),
        ("smallnorb-ele", {"train": 24300, "test": 24300}, ("test", 0, 200), ("test", 12150, 24300)),
        ("dtd", {"train": 1880, "validation": 1880, "test": 1880}, ("validation", 0, 200), ("test", 0, 1880)),
    ],
)
def test_slices_at_the_real_sizes(name, sizes, val200, test):
    official = get_task(name).official
    assert official.segments("train800", sizes.__getitem__) == (("train", 0, 800),)
    assert official.segments("val200", sizes.__getitem__) == (val200,)
    assert official.segments("train800val200", sizes.__getitem__) == (("train", 0, 800), val200)
    assert official.segments("test", sizes.__getitem__) == (test,)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_official_splits_on_fake_files(tmp_path, name):
    write, test_size = WRITERS[name]
    task = get_task(name, data_root=tmp_path)
    assert task.availability()[0] is False
    written = write(tmp_path)
    assert task.availability() == (True, "")
    splits = {split: task.split(split, seed=3) for split in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [800, 200, 1000, test_size]
    # Each part is read in file order (where the writer knows it).
    for part, labels in written.items():
        np.testing.assert_array_equal(task.part(part)[1], labels)

    def served(part: str) -> np.ndarray:  # the documented order: the files' own, or default_rng(0)'s
        count = len(task.part(part)[1])
        return (
            np.arange(count) if task.official.order == "file" else np.random.default_rng(0).permutation(count)
        )

    _, val_part, val_cut, test_part, test_cut = OFFICIAL[name]
    val_start = _start(len(task.part(val_part)[1]), val_cut)
    expected = {
        "train800": [("train", served("train")[:800])],
        "val200": [(val_part, served(val_part)[val_start : val_start + 200])],
        "test": [(test_part, served(test_part)[_start(len(task.part(test_part)[1]), test_cut) :])],
    }
    expected["train800val200"] = expected["train800"] + expected["val200"]
    for split in SPLITS:
        sources = task.sources(split)
        assert [part for part, _ in sources] == [part for part, _ in expected[split]]
        for (_, got), (_, want) in zip(sources, expected[split]):
            np.testing.assert_array_equal(got, want)
        labels = np.concatenate([task.part(part)[1][index] for part, index in expected[split]])
        np.testing.assert_array_equal(splits[split].labels, labels)
    # train800val200 and test share no image.
    used = {(part, int(i)) for part, index in task.sources("train800val200") for i in index}
    assert len(used) == 1000
    assert not used & {(part, int(i)) for part, index in task.sources("test") for i in index}
    assert splits["train800"].labels.min() >= 0 and splits["train800"].labels.max() < task.info.num_classes
    if name in COLOUR_CODED:  # images and labels stay paired: each fake image's colour encodes its label
        for split in (splits["train800val200"], splits["test"]):
            for index in np.linspace(0, len(split) - 1, 6).astype(int):
                assert fake_vtab.label_of(split.image(int(index))) == split.labels[index]
    # The seed changes nothing: the same images for every seed.
    assert task.split_is_seeded is False
    for split in ("train800", "val200"):
        other = task.split(split, seed=4)
        np.testing.assert_array_equal(other.labels, splits[split].labels)
        for index in (0, len(other) // 2, len(other) - 1):
            assert np.array_equal(np.asarray(other.image(index)), np.asarray(splits[split].image(index)))


def test_caltech_train_part_is_thirty_per_class(tmp_path):
    fake_vtab.write_caltech101(tmp_path, classes=3, per_class=34)
    task = get_task("caltech101", data_root=tmp_path)
    train, test = task.part("train")[1], task.part("test")[1]
    assert np.bincount(train).tolist() == [30, 30, 30] and np.bincount(test).tolist() == [4, 4, 4]


def test_sun397_without_tfds_lists_is_a_fixed_70_10_20_partition(tmp_path):
    fake_vtab.write_sun397(tmp_path, classes=4, per_class=50)
    task = get_task("sun397", data_root=tmp_path)
    sizes = [len(task.part(part)[1]) for part in ("train", "validation", "test")]
    assert sizes == [140, 20, 40]
    labels = np.concatenate([task.part(part)[1] for part in ("train", "validation", "test")])
    assert np.bincount(labels).tolist() == [50, 50, 50, 50]


def test_sun397_follows_tfds_lists_when_present(tmp_path):
    fake_vtab.write_sun397(tmp_path, classes=25, per_class=50)
    folder = tmp_path / "SUN397"
    images = sorted("/" + path.relative_to(folder).as_posix() for path in folder.rglob("sun_*.jpg"))
    scene = {name: int(name.split("/")[2][len("scene") :]) for name in images}
    lists = {
        "sun397_tfds_tr.txt": [n for n in images if scene[n] < 18],
        "sun397_tfds_va.txt": [n for n in images if 18 <= scene[n] < 22],
        "sun397_tfds_te.txt": [n for n in images if scene[n] >= 22],
    }
    for file, names in lists.items():
        (folder / file).write_text("\n".join(reversed(names)) + "\n")
    task = get_task("sun397", data_root=tmp_path)
    assert set(task.part("train")[1]) == set(range(18)) and len(task.part("train")[1]) == 900
    assert set(task.part("validation")[1]) == {18, 19, 20, 21} and len(task.part("validation")[1]) == 200
    assert set(task.part("test")[1]) == {22, 23, 24}
    assert len(task.split("train800val200")) == 1000
    # A listed image missing on disk is reported.
    (folder / lists["sun397_tfds_te.txt"][0][1:]).unlink()
    with pytest.raises(ValueError, match="sun397_tfds_te.txt names 150 images, 1 of them not under"):
        get_task("sun397", data_root=tmp_path).part("test")


@pytest.mark.parametrize(("name", "column", "bins"), [("dsprites-loc", 4, 2), ("dsprites-ori", 3, None)])
def test_dsprites_official_npz(tmp_path, name, column, bins):
    classes = fake_vtab.write_dsprites(tmp_path)
    task = get_task(name, data_root=tmp_path)
    train, test = task.split("train800"), task.split("test")
    assert len(train) == 800 and len(test) == 200 and task.info.num_classes == 16
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
    train, val, test = task.split("train800"), task.split("val200"), task.split("test")
    assert (len(train), len(val), len(test)) == (800, 200, 200)
    for split in (train, val, test):
        for index in range(0, len(split), 50):
            pixels = np.asarray(split.image(index).convert("L"))
            elevation, azimuth = int(pixels[0, 0]), int(pixels[0, 1])
            assert split.labels[index] == (azimuth // 2 if factor == "azimuth" else elevation)


def test_split_is_seeded_only_off_vtab():
    assert all(get_task(name).split_is_seeded is False for name in VTAB_TASKS)
    assert all(get_task(name).split_is_seeded is True for name in OFFLINE_TASKS)


def test_order_warning_is_logged_once_per_task(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(vtab_task_module, "_WARNED", set())
    fake_vtab.write_cifar100(tmp_path)
    task = get_task("cifar100", data_root=tmp_path)
    with caplog.at_level(logging.WARNING, logger=vtab_task_module.__name__):
        task.split("train800")
        task.split("test")
        get_task("cifar100", data_root=tmp_path).split("val200")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cifar100" in warnings[0] and "task_adaptation/data/cifar.py" in warnings[0]
    assert "not TFDS's" in warnings[0] and task.order_note in warnings[0]


def test_too_small_part_names_the_part_and_the_slice(tmp_path):
    fake_vtab.write_cifar100(tmp_path, train=1000)
    task = get_task("cifar100", data_root=tmp_path)
    with pytest.raises(
        InvalidValueError, match=r"size of the 'train' part must hold val200 = train\[900:1100\]"
    ):
        task.split("train800")


def test_missing_data_names_root_and_flag_and_downloads_nothing(tmp_path):
    task = get_task("svhn", data_root=tmp_path)
    with pytest.raises(TaskUnavailableError, match=rf"no svhn data under {tmp_path}.*--download"):
        task.split("train800")
    with pytest.raises(TaskUnavailableError, match="--download"):
        task.sources("test")
    assert list(tmp_path.iterdir()) == []


def test_pcam_without_its_validation_files_is_unavailable(tmp_path):
    fake_vtab.write_pcam(tmp_path)
    for path in (tmp_path / "pcam").glob("*valid*"):
        path.unlink()
    assert get_task("pcam", data_root=tmp_path).availability()[0] is False


def test_truncated_norb_file_is_reported(tmp_path):
    fake_vtab.write_smallnorb(tmp_path)
    path = next((tmp_path / "smallnorb").glob("*training-info.mat"))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ValueError, match="truncated"):
        get_task("smallnorb-azi", data_root=tmp_path).split("train800")


def test_pickled_task_leaves_its_loaded_parts_behind(tmp_path):
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


def test_official_splits_are_part_of_the_extraction_cache_key():
    from hgprompt_ray.workers.extract.keys import target_fingerprint

    protocol = vtab_task_module.VtabTask.SPLIT_PROTOCOL
    assert target_fingerprint(get_task("svhn"), 0) == f"task:svhn@{protocol}"  # not the seeded splits' key
    assert target_fingerprint(get_task("digits"), 0) == "task:digits"  # offline keys (and caches) unchanged
