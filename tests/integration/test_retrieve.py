"""retrieve.py on two folders of one's own images: the files read back with h5py / csv / json, the ranking checked
against a brute-force search of the written descriptors, PCA fitted once and reused, bad settings refused."""

from __future__ import annotations

import csv
import json
import shutil

import h5py
import numpy as np
import pytest

from tests.conftest import ROOT, run_script, the_error_line
from tests.test_checkpoint_compat import random_checkpoint

TOP_K = 5


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory):
    """database/ (two subfolders) and queries/ (real queries plus two byte-for-byte copies of database images)."""
    root = tmp_path_factory.mktemp("mine")
    city = data_dir / "city_tiny_seed0"
    db_images = sorted(city.glob("000/*.jpg"))[:24]
    for i, f in enumerate(db_images):
        sub = root / "images" / "db" / ("north" if i % 2 else "south")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, sub / f.name)
    q = root / "images" / "query"
    q.mkdir(parents=True)
    for f in sorted(city.glob("queries_real/000/*.jpg"))[:4]:
        shutil.copy(f, q / f.name)
    shutil.copy(db_images[3], q / "copy_of_db3.jpg")  # db_images[3] went to db/north
    shutil.copy(db_images[10], q / "copy_of_db10.png")  # a .png name holding a JPEG: PIL reads the content
    random_checkpoint(root / "model.ckpt")
    return root, db_images


def h5_descriptors(path):
    """Walk the HDF5 file as hloc does: every group that holds a `global_descriptor` dataset is an image."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and "global_descriptor" in obj:
            out[name] = np.asarray(obj["global_descriptor"], dtype=np.float64)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def folders_settings(root, out) -> list[str]:
    """The checkpoint, the two image folders of ``folders`` and the run folder ``out``."""
    return [
        f"ckpt_path={root / 'model.ckpt'}",
        f"database={root / 'images' / 'db'}",
        f"queries={root / 'images' / 'query'}",
        f"hydra.run.dir={out}",
    ]


def retrieve(root, out, *extra):
    return run_script(
        "retrieve.py", *folders_settings(root, out), f"top_k={TOP_K}", "data.num_workers=0", *extra, tmp=root
    )


def test_retrieve_writes_hloc_files_whose_ranking_is_the_brute_force_one(folders, tmp_path):
    root, db_images = folders
    out = tmp_path / "run"
    retrieve(root, out)

    feats = h5_descriptors(out / "global-feats.h5")
    db_names = sorted(n for n in feats if n.startswith("db/"))
    q_names = sorted(n for n in feats if n.startswith("query/"))
    assert len(db_names) == 24 and len(q_names) == 6 and len(feats) == 30  # names relative to images/
    assert "db/north/" + db_images[3].name in db_names
    assert {len(v) for v in feats.values()} == {feats[db_names[0]].shape[0]}  # one D for all, 1-D arrays

    db = np.stack([feats[n] for n in db_names])
    # the descriptors belong to their images: a copied file has its original's descriptor, others differ
    np.testing.assert_allclose(feats["query/copy_of_db3.jpg"], feats["db/north/" + db_images[3].name], atol=1e-5)
    assert np.abs(feats["query/copy_of_db3.jpg"] - feats["db/south/" + db_images[4].name]).max() > 1e-3

    with open(out / "retrievals.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ranked = json.loads((out / "retrievals.json").read_text())
    pairs = [line.split() for line in (out / f"pairs-top{TOP_K}.txt").read_text().splitlines()]
    assert sorted(ranked) == q_names and len(rows) == len(pairs) == 6 * TOP_K
    for q in q_names:
        # brute force in float64 over every database descriptor written
        d = np.sqrt(((db - feats[q]) ** 2).sum(1))
        mine = [r for r in rows if r["query"] == q]
        assert [int(r["rank"]) for r in mine] == list(range(1, TOP_K + 1))
        got = [r["database"] for r in mine]
        assert [p[1] for p in pairs if p[0] == q] == got
        assert [e["database"] for e in ranked[q]] == got
        # top-1 is the brute-force nearest (up to float32 ties), distances are the L2 ones, ascending
        assert d[db_names.index(got[0])] <= d.min() + 1e-6
        np.testing.assert_allclose(
            [float(r["distance"]) for r in mine], [d[db_names.index(g)] for g in got], rtol=1e-3, atol=1e-6
        )
        assert sorted(d)[TOP_K - 1] + 1e-6 >= max(d[db_names.index(g)] for g in got)
    assert ranked["query/copy_of_db3.jpg"][0]["database"] == "db/north/" + db_images[3].name
    assert ranked["query/copy_of_db10.png"][0]["database"] == "db/south/" + db_images[10].name


def test_pca_fitted_once_is_reused_from_its_file(folders, tmp_path):
    root, _ = folders
    retrieve(root, tmp_path / "raw")
    retrieve(root, tmp_path / "fit", "pca_dim=8")
    retrieve(root, tmp_path / "reuse", f"pca_file={tmp_path / 'fit' / 'pca.npz'}")
    raw = h5_descriptors(tmp_path / "raw" / "global-feats.h5")
    fitted = h5_descriptors(tmp_path / "fit" / "global-feats.h5")
    reused = h5_descriptors(tmp_path / "reuse" / "global-feats.h5")
    assert {v.shape for v in fitted.values()} == {(8,)}
    with np.load(tmp_path / "fit" / "pca.npz") as pca:
        mean, comps, var, eps = pca["mean"], pca["components"], pca["explained_variance"], float(pca["eps"])
    for name, x in raw.items():
        # PCA-whitening by its formula: project the centred descriptor, divide by the component's std, L2
        y = (comps @ (x - mean)) / np.sqrt(var + eps)
        np.testing.assert_allclose(fitted[name], y / np.linalg.norm(y), atol=1e-4)
        np.testing.assert_allclose(reused[name], fitted[name], atol=1e-6)
    # the whitened database has (close to) identity covariance before the final L2: the fit used the database
    db = np.stack([(comps @ (raw[n] - mean)) / np.sqrt(var + eps) for n in raw if n.startswith("db/")])
    np.testing.assert_allclose(np.cov(db.T), np.eye(8), atol=1e-3)


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["database=nowhere"], "database=nowhere"),
        (["queries=empty"], "queries=empty"),
        (["ckpt_path=null"], "ckpt_path"),
        (["top_k=0"], "top_k"),
        (["pca_file=missing.npz"], "pca_file=missing.npz"),
        (["pca_dim=8", "pca_file=x.npz"], "pca_file"),
    ],
    ids=["missing-database", "empty-queries", "no-checkpoint", "top-k-zero", "missing-pca-file", "both-pca"],
)
def test_bad_settings_end_with_one_error_line(folders, tmp_path, overrides, names):
    root, _ = folders
    (root / "empty").mkdir(exist_ok=True)
    proc = run_script("retrieve.py", *folders_settings(root, tmp_path / "run"), *overrides, tmp=root, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-2000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and names in errors[0], output[-2000:]
    assert "Traceback" not in output


def test_label_maps_beside_photos_are_left_out(tmp_path):
    """The synthetic city keeps `<photo>_labels.png` beside each photo: retrieve.yaml's exclude leaves them out."""
    from omegaconf import OmegaConf

    from vpr.errors import ConfigError
    from vpr.run.retrieve import list_images

    for name in ("000/a.jpg", "000/a_labels.png", "001/b.png", "001/b_labels.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    exclude = OmegaConf.load(ROOT / "configs" / "retrieve.yaml").exclude
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, "database", exclude)] == [
        "000/a.jpg",
        "001/b.png",
    ]
    assert len(list_images(tmp_path, "database")) == 4  # nothing left out without patterns
    with pytest.raises(ConfigError, match="is a file"):
        list_images(tmp_path / "000" / "a.jpg", "database")


def test_a_released_file_is_run_at_the_pittsburgh_size(tmp_path):
    """A released checkpoint stores no image size: its images are read at 480x640 (the size it was trained at), not
    at the config's default (the city's), unless data.image_size is given."""
    from PIL import Image

    from tests.test_baseline_checkpoints import baseline_file

    baseline_file(tmp_path / "checkpoint.pth.tar")
    for folder, n in (("db", 2), ("query", 1)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            Image.new("RGB", (64, 48), (40 * i, 90, 160)).save(tmp_path / folder / f"{i}.jpg")
    common = [
        f"ckpt_path={tmp_path / 'checkpoint.pth.tar'}",
        f"database={tmp_path / 'db'}",
        f"queries={tmp_path / 'query'}",
        "top_k=1",
        "data.num_workers=0",
    ]
    run_script("retrieve.py", *common, f"hydra.run.dir={tmp_path / 'r1'}", tmp=tmp_path)
    assert json.loads((tmp_path / "r1" / "retrieve.json").read_text())["image_size"] == [480, 640]
    run_script("retrieve.py", *common, "data.image_size=[48,64]", f"hydra.run.dir={tmp_path / 'r2'}", tmp=tmp_path)
    assert json.loads((tmp_path / "r2" / "retrieve.json").read_text())["image_size"] == [48, 64]


def test_queries_that_are_the_database_are_not_paired_with_themselves(folders, tmp_path):
    """queries=database (hloc's image retrieval within one set): every query's list holds top_k other images, the
    nearest of them first, as a brute-force search leaving the query out gives; a folder of links reads as itself."""
    root, _ = folders
    links = root / "linked"
    (links / "db").mkdir(parents=True)
    for f in sorted((root / "images" / "db" / "north").glob("*.jpg")):
        (links / "db" / f.name).symlink_to(f)  # a folder of links to images kept elsewhere
    out = tmp_path / "run"
    run_script(
        "retrieve.py",
        f"ckpt_path={root / 'model.ckpt'}",
        f"database={links / 'db'}",
        f"queries={links / 'db'}",
        f"top_k={TOP_K}",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
        tmp=root,
    )
    feats = h5_descriptors(out / "global-feats.h5")
    names = sorted(feats)
    assert names == sorted(f.name for f in (links / "db").iterdir())  # the links' names, under the links' folder
    pairs = [line.split() for line in (out / f"pairs-top{TOP_K}.txt").read_text().splitlines()]
    assert len(pairs) == 12 * TOP_K and all(q != d for q, d in pairs)
    descriptors = np.stack([feats[n] for n in names])
    for i, q in enumerate(names):
        d = np.sqrt(((descriptors - descriptors[i]) ** 2).sum(1))
        d[i] = np.inf  # itself left out
        got = [p[1] for p in pairs if p[0] == q]
        assert d[names.index(got[0])] <= d.min() + 1e-6
        assert sorted(d)[TOP_K - 1] + 1e-6 >= max(d[names.index(g)] for g in got)


def test_a_pca_larger_than_the_database_is_refused_before_encoding(folders, tmp_path):
    root, _ = folders
    proc = run_script("retrieve.py", *folders_settings(root, tmp_path / "run"), "pca_dim=24", tmp=root, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-2000:]
    assert "error: pca_dim=24 must be below the number of database images (24)" in output, output[-2000:]
    assert "database:" not in output, output[-2000:]  # the encoding's progress: no image was encoded


def apple_double(path):
    """The ``._<name>`` file macOS writes beside a file copied to a disk without its metadata: an AppleDouble header
    (magic 0x00051607, version 0x00020000, 16 filler bytes, 0 entries), not an image, though named ``.jpg``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes.fromhex("0005160700020000") + b"Mac OS X        " + b"\0\0")


def test_hidden_files_and_macos_copies_are_not_taken_for_images(tmp_path):
    """A folder copied from macOS holds ``._<photo>.jpg`` beside each photo (and a zip made there a ``__MACOSX/``
    folder of them): reading one as an image stopped retrieve.py in the middle of the encoding. Hidden files and
    folders are left out; a folder holding nothing else is refused naming them."""
    from PIL import Image

    from vpr.errors import ConfigError
    from vpr.run.retrieve import list_images

    db = tmp_path / "db"
    for name in ("a.jpg", "street/b.png", "c.jpg"):
        (db / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6)).save(db / name)
    for name in ("._a.jpg", "street/._b.png", "__MACOSX/street/._b.png"):
        apple_double(db / name)
    (db / ".thumbnails").mkdir()
    Image.new("RGB", (8, 6)).save(db / ".thumbnails" / "a.jpg")
    assert [p.relative_to(db).as_posix() for p in list_images(db, "database")] == ["a.jpg", "c.jpg", "street/b.png"]

    only_hidden = tmp_path / "only_hidden"
    apple_double(only_hidden / "._x.jpg")
    with pytest.raises(ConfigError, match="no images in it or its subfolders .*; 1 hidden files left out"):
        list_images(only_hidden, "queries")


def test_images_in_linked_folders_are_found_once(tmp_path):
    """An image folder assembled from links to folders elsewhere (a cluster's datasets on another disk):
    ``Path.rglob`` does not enter linked folders, so their images were left out without a word. Each is found
    under its linked name; a link back up the tree is entered once, not forever."""
    from PIL import Image

    from vpr.run.retrieve import image_names, list_images

    elsewhere = tmp_path / "disk2" / "street_b"
    elsewhere.mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(elsewhere / "b.jpg")
    db = tmp_path / "db"
    (db / "street_a").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(db / "street_a" / "a.jpg")
    (db / "street_b").symlink_to(elsewhere, target_is_directory=True)
    (db / "street_a" / "up").symlink_to(db, target_is_directory=True)  # a cycle
    found = list_images(db, "database")
    assert image_names(found, tmp_path, "database") == ["db/street_a/a.jpg", "db/street_b/b.jpg"]


def test_a_second_run_in_the_same_folder_sets_the_first_ones_files_aside(folders, tmp_path):
    """hydra.run.dir given again (a pipeline's fixed output folder): the first run's pairs-top5.txt stayed beside
    the second's pairs-top3.txt, and its pca.npz beside descriptors this run did not whiten. An earlier run's
    files move to .earlier/<time>/, unchanged, before the run starts; a pca.npz this run reads stays."""
    root, _ = folders
    out = tmp_path / "fixed"
    retrieve(root, out, "pca_dim=8")  # top_k=5
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.endswith(".log")}
    assert {"pairs-top5.txt", "pca.npz", "global-feats.h5"} <= set(first)

    retrieve(root, out, "top_k=3", f"pca_file={out / 'pca.npz'}")
    assert sorted(p.name for p in out.glob("pairs-top*.txt")) == ["pairs-top3.txt"]
    assert (out / "pca.npz").read_bytes() == first["pca.npz"]  # read by this run: not moved
    assert {len(v) for v in h5_descriptors(out / "global-feats.h5").values()} == {8}
    (earlier,) = (out / ".earlier").iterdir()
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == {k: v for k, v in first.items() if k != "pca.npz"}

    retrieve(root, out, "top_k=3")  # without PCA: the PCA of the runs before is theirs
    assert not (out / "pca.npz").exists()
    assert any(
        (d / "pca.npz").is_file() and (d / "pca.npz").read_bytes() == first["pca.npz"]
        for d in (out / ".earlier").iterdir()
    )
    summary = json.loads((out / "retrieve.json").read_text())
    assert summary["pca_file"] is None and summary["descriptor_dim"] > 8


def test_a_query_folder_inside_the_database_folder_is_warned_about(tmp_path, caplog):
    """queries=mycity/query inside database=mycity: the queries are database images too, so each query's list holds
    the other queries. One warning names both folders and the two fixes; the same folder for both (retrieval within
    one set) and an inner folder that exclude leaves out get none."""
    from omegaconf import OmegaConf

    from vpr.run.retrieve import list_images, nested_folders_warning

    city = tmp_path / "mycity"
    for name in ("db/a.jpg", "db/b.jpg", "query/q1.jpg", "query/q2.jpg"):
        (city / name).parent.mkdir(parents=True, exist_ok=True)
        (city / name).write_bytes(b"")

    def warnings_for(database, queries, exclude=()):
        caplog.clear()
        db = [f.relative_to(tmp_path).as_posix() for f in list_images(database, "database", exclude)]
        q = [f.relative_to(tmp_path).as_posix() for f in list_images(queries, "queries", exclude)]
        with caplog.at_level("WARNING", logger="vpr.run.retrieve"):
            nested_folders_warning(OmegaConf.create({"database": str(database), "queries": str(queries)}), db, q)
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    (warning,) = warnings_for(city, city / "query")
    assert f"queries={city / 'query'} lies inside database={city}: 2 of its images are database images" in warning
    assert "separate folders" in warning and "'exclude=[*_labels.png,query/*]'" in warning
    (warning,) = warnings_for(city / "query", city)  # the other way round
    assert f"database={city / 'query'} lies inside queries={city}" in warning
    assert warnings_for(city, city) == []  # one set: a supported case
    assert warnings_for(city / "db", city / "query") == []
    # the fix the warning gives works: the inner folder is left out of the database, and the warning goes
    assert warnings_for(city, city / "query", ["*_labels.png", "query/*"]) == []
    assert [f.name for f in list_images(city, "database", ["query/*"])] == ["a.jpg", "b.jpg"]


def test_files_of_other_types_are_counted_by_suffix(tmp_path, caplog):
    """Photos in a format that is not read (an iPhone's HEIC) beside the JPEGs were left out without a word: the
    log counts the files left out by suffix, as a warning naming HEIC and the conversion; a folder of HEIC photos
    only is refused naming them."""
    from PIL import Image

    from vpr.errors import ConfigError
    from vpr.run.retrieve import list_images

    mixed = tmp_path / "mixed"
    (mixed / "day2").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(mixed / "a.jpg")
    for i in range(10):
        (mixed / ("day2" if i % 2 else "") / f"IMG_{i}.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (mixed / "notes.txt").write_text("x")
    (mixed / "day2" / "list.txt").write_text("x")
    (mixed / "._IMG_0.HEIC").write_bytes(b"")  # hidden: not counted
    with caplog.at_level("INFO", logger="vpr.run.retrieve"):
        assert [f.name for f in list_images(mixed, "database")] == ["a.jpg"]
    (record,) = [r for r in caplog.records if "other types" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert f"database={mixed}: 12 files of other types left out: .heic (10), .txt (2) (HEIC (.heic)" in (
        record.getMessage()
    )
    assert "convert them to JPEG" in record.getMessage()

    caplog.clear()
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.new("RGB", (8, 6)).save(plain / "a.png")
    (plain / "readme.md").write_text("x")
    with caplog.at_level("INFO", logger="vpr.run.retrieve"):
        list_images(plain, "queries")
    (record,) = [r for r in caplog.records if "other types" in r.getMessage()]
    assert record.levelname == "INFO" and record.getMessage().endswith("1 files of other types left out: .md (1)")

    heic = tmp_path / "heic"
    heic.mkdir()
    for i in range(3):
        (heic / f"IMG_{i}.heic").write_bytes(b"\0\0\0\x18ftypheic")
    with pytest.raises(ConfigError, match=r"no images in it .*; 3 photos of other formats: HEIC \(.heic\) .*convert"):
        list_images(heic, "queries")


def not_images(folder, n):
    """``n`` files named like images that are not: text, empty, a PNG signature with nothing after it."""
    contents = [b"<html>404 Not Found</html>", b"", b"\x89PNG\r\n\x1a\n"]
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"bad{i}.{('jpg', 'png', 'png')[i % 3]}" for i in range(n)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(contents[i % 3])
    return names


def test_files_that_are_not_images_are_listed_in_one_error(tmp_path):
    from PIL import Image

    from vpr.errors import DataError
    from vpr.run.retrieve import check_image_headers, list_images

    db = tmp_path / "db"
    (db / "street").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(db / "street" / "good.jpg")
    names = not_images(db, 8)
    files = list_images(db, "database")
    assert len(files) == 9
    with pytest.raises(DataError) as e:
        check_image_headers(files, db, "database")
    message = str(e.value)
    assert message.startswith(f"database={db}: 8 of its 9 image files are not images that can be read: ")
    assert all(n in message for n in sorted(names)[:5]) and not any(n in message for n in sorted(names)[5:])
    assert "; and 3 more." in message and "good.jpg" not in message and "exclude=" in message
    check_image_headers([db / "street" / "good.jpg"], db, "database")  # a real image passes


def test_a_file_that_is_not_an_image_stops_retrieve_before_the_network_is_loaded(tmp_path):
    """A file named .jpg that is no image (a download that saved an error page) stopped retrieve.py in the middle
    of the encoding: it is refused before the checkpoint is read (here a missing one, which would be refused
    otherwise) or any image encoded."""
    from PIL import Image

    for folder in ("db", "query"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (8, 6)).save(tmp_path / folder / "ok.jpg")
    not_images(tmp_path / "query", 1)
    proc = run_script(
        "retrieve.py",
        f"ckpt_path={tmp_path / 'no_such.ckpt'}",
        f"database={tmp_path / 'db'}",
        f"queries={tmp_path / 'query'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        tmp=tmp_path,
        check=False,
    )
    line = the_error_line(proc)
    assert f"queries={tmp_path / 'query'}: 1 of its 2 image files" in line and "bad0.jpg" in line, line
    # the database inside the queries folder: the queries' count is of all their images, those of the database too
    proc = run_script(
        "retrieve.py",
        f"ckpt_path={tmp_path / 'no_such.ckpt'}",
        f"database={tmp_path / 'db'}",
        f"queries={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run2'}",
        tmp=tmp_path,
        check=False,
    )
    line = the_error_line(proc)
    assert f"queries={tmp_path}: 1 of its 3 image files are not images that can be read: query/bad0.jpg" in line
