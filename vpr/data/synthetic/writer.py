"""The synthetic city on disk: planning the districts and cameras, rendering the images (optionally in worker
processes), the dbStruct files, ``classes.json`` and the manifest (written last), and :func:`generate_city`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vpr.data.mat import DbStruct, save_dbstruct
from vpr.data.synthetic.config import (
    CLASSES,
    DATASET_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    PRESETS,
    SPLITS,
    UTM_ORIGIN_M,
    CityConfig,
    get_preset,
)
from vpr.data.synthetic.render import _sensor, render_view
from vpr.data.synthetic.textures import TextureBank, build_textures
from vpr.data.synthetic.world import District, _make_district, draw_lighting
from vpr.errors import ConfigError, DataError
from vpr.io import exclusive_lock, write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    districts: list[District]
    db_poses: list[np.ndarray]  # per split (N, 3): x, y, yaw (local)
    db_names: list[list[str]]
    q_poses: list[np.ndarray]
    q_names: list[list[str]]


def _image_name(index: int, yaw_index: int) -> str:
    # Pittsburgh style: folder = index // 1000, "<index:06d>_pitch1_yaw<k>.jpg"
    return f"{index // 1000:03d}/{index:06d}_pitch1_yaw{yaw_index}.jpg"


def _plan_city(cfg: CityConfig, seed: int, textures: TextureBank) -> _Plan:
    districts, db_poses, db_names, q_poses, q_names = [], [], [], [], []
    x_offset = 0.0
    place_base = query_base = 0
    for split_idx, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, split_idx, 101])
        n_db, n_q = cfg.split_counts(split)
        n_places = -(-n_db // cfg.db_headings)
        origin = (UTM_ORIGIN_M[0] + x_offset, UTM_ORIGIN_M[1])
        district = _make_district(cfg, textures, rng, n_places, origin)
        districts.append(district)
        x_offset += district.width_m + cfg.district_gap_m

        base_yaw = district.place_dir + math.radians(cfg.heading_offset_deg)
        poses, names = [], []
        for p in range(n_places):
            for k in range(cfg.db_headings):
                if len(poses) == n_db:
                    break
                yaw = base_yaw[p] + 2 * math.pi * k / cfg.db_headings
                yaw += math.radians(rng.uniform(-1, 1) * cfg.db_heading_jitter_deg)
                poses.append((*district.place_xy[p], yaw))
                names.append(_image_name(place_base + p, k + 1))
        db_poses.append(np.asarray(poses))
        db_names.append(names)
        place_base += n_places

        # queries: near a database place, with another heading near one of its database headings
        street_half = cfg.road_half_width_m + cfg.sidewalk_width_m
        max_gt_m = 10.0 if split == "train" else 25.0  # non-trivial positive radius / evaluation radius
        place_xy = district.place_xy
        poses, names = [], []
        for qi in range(n_q):
            for _try in range(50):
                p = int(rng.integers(n_places))
                direction = district.place_dir[p]
                along = np.array([math.cos(direction), math.sin(direction)])
                normal = np.array([math.sin(direction), -math.cos(direction)])
                centre = place_xy[p] - cfg.db_lateral_m * normal  # back onto the centre line
                across = float(
                    np.clip(rng.uniform(-1, 1) * cfg.query_offset_across_m, -(street_half - 0.7), street_half - 0.7)
                )
                q = centre + rng.uniform(-1, 1) * cfg.query_offset_along_m * along + across * normal
                if np.min(np.hypot(*(place_xy - q).T)) < max_gt_m - 0.5:
                    break
            k = int(rng.integers(cfg.db_headings))
            yaw = base_yaw[p] + 2 * math.pi * k / cfg.db_headings
            yaw += math.radians(rng.uniform(-1, 1) * cfg.query_yaw_jitter_deg)
            poses.append((q[0], q[1], yaw))
            names.append(_image_name(query_base + qi, k + 1))
        q_poses.append(np.asarray(poses).reshape(-1, 3))
        q_names.append(names)
        query_base += n_q
    return _Plan(districts, db_poses, db_names, q_poses, q_names)


def _labels_path(image_path: Path) -> Path:
    return image_path.with_name(image_path.stem + "_labels.png")


def _render_task(state: dict[str, Any], task: tuple) -> None:
    split_idx, kind, index, x, y, yaw, rel = task
    cfg, seed = state["cfg"], state["seed"]
    rng = np.random.default_rng([seed, split_idx, kind, index, 202])
    lt = draw_lighting(cfg, rng, is_query=kind == 1)
    view_cfg = cfg.query_objects() if kind == 1 else cfg
    rgb, labels = render_view(state["worlds"][split_idx], state["textures"], view_cfg, (x, y), yaw, lt, rng)
    img = _sensor(rgb, lt, rng)
    path = state["root"] / rel
    Image.fromarray(img).save(path, format="JPEG", quality=lt.jpeg_quality)
    Image.fromarray(labels).save(_labels_path(path), format="PNG")


_WORKER_STATE: dict[str, Any] = {}  # per worker process only, set by the pool initializer


def _worker_init(state: dict[str, Any]) -> None:
    # A forked worker inherits its parent's signal handlers: under a job manager that ignores SIGTERM (submitit
    # does, to handle preemption), the pool could never stop its workers.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Ctrl-C reaches every process of the terminal's group: the parent stops the pool, the workers say nothing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    _WORKER_STATE.clear()
    _WORKER_STATE.update(state)


def _end_with_parent() -> None:
    """On Linux, this worker gets SIGTERM when its parent dies (a parent killed with SIGKILL cannot stop its pool,
    whose orphans would otherwise write on a closed pipe)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _worker_run(tasks: list[tuple]) -> int:
    for task in tasks:
        _render_task(_WORKER_STATE, task)
    return len(tasks)


def _manifest(cfg: CityConfig, seed: int) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "generator": "vpr.data.synthetic",
        "seed": int(seed),
        "config": dataclasses.asdict(cfg),
    }


#: CityConfig fields newer than some cities on disk, with the value those cities were rendered with.
FIELDS_ADDED_LATER: dict[str, Any] = {"query_occlusion": "medium"}


def _read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of the city in ``root`` (None: none readable), its config completed with the settings added
    later, whose defaults render what cities did before."""
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(manifest.get("config"), dict):
        manifest["config"] = {**FIELDS_ADDED_LATER, **manifest["config"]}
    return manifest


def _expected_manifest(cfg: CityConfig, seed: int) -> dict[str, Any]:
    """The manifest of this config and seed as read back from its JSON (tuples become lists)."""
    return json.loads(json.dumps(_manifest(cfg, seed)))


def _is_complete(root: Path, cfg: CityConfig, seed: int) -> bool:
    manifest = _read_manifest(root)
    if manifest is None:
        return False
    expected = _expected_manifest(cfg, seed)
    same = all(manifest.get(k) == expected[k] for k in ("format_version", "seed", "config"))
    return same and all((root / "datasets" / f"{DATASET_NAME}_{s}.mat").is_file() for s in SPLITS)


#: Written first and removed last: a folder holding it is a generation of this module that was interrupted.
MARKER_NAME = "city.generating"
#: Held (flock) while a process generates: parallel jobs of a sweep on a fresh machine wait for one generator.
LOCK_NAME = ".city.lock"


def _generation_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on ``root/.city.lock``: a second generator waits for the first."""
    return exclusive_lock(
        root / LOCK_NAME,
        lambda: log.info("another process is generating the synthetic city in %s: waiting for it", root),
    )


def _check_ownership(root: Path) -> None:
    """Refuse to write into a folder that holds files but no city of this generator (nor an interrupted one)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DataError(f"the synthetic city's folder {root} is a file; point data.root (or --out) at a folder")
    entries = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME)
    if not entries or MARKER_NAME in entries:
        return
    try:
        ours = json.loads((root / MANIFEST_NAME).read_text()).get("generator") == "vpr.data.synthetic"
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours and (root / MANIFEST_NAME).is_file():  # a city's manifest cut short (a copy interrupted), or another's
        raise DataError(
            f"refusing to write the synthetic city into {root}: its {MANIFEST_NAME} is not the manifest of a city of "
            "this generator (cut short by an interrupted copy?). Nothing was written. If the folder is a synthetic "
            "city, delete it and the next run generates it again; otherwise point data.root (or paths.data_dir, or "
            "--out) at an empty or new folder."
        )
    if not ours:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise DataError(
            f"refusing to write the synthetic city into {root}: it holds other files ({shown}) and no city of "
            f"this generator ({MANIFEST_NAME}). Nothing was written. Point data.root (or paths.data_dir, or --out) "
            "at an empty or new folder; to read a real dataset there use its data config (e.g. data=pitts30k)."
        )


def generate_city(
    out_dir: str | os.PathLike,
    preset: str | CityConfig = "default",
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
    force: bool = False,
    replace: bool | str = True,
) -> Path:
    """Generate the synthetic city under ``out_dir`` (idempotent) and return its root.

    If ``out_dir/city.json`` already records the same format version, config and seed, nothing is done.
    Otherwise (an interrupted generation, or another config) the city is (re)written: a marker file first, the
    manifest last. A folder that holds other files and no city of this generator is refused with a
    :class:`~vpr.errors.DataError` and left untouched. ``workers`` (default: up to 2 CPUs) does not change the
    output.

    ``replace``: whether a complete city of other settings in ``out_dir`` may be replaced (with a warning).
    ``"auto"`` (data=synthetic's setting): only in the folder named for these settings (``city_<preset>_seed<seed>``,
    where a city of other settings is one of an older generator); in any other folder, a city someone pointed
    ``data.root`` at, the refusal names the settings that would use it as it is.
    """
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    if not isinstance(cfg, CityConfig):
        raise TypeError(f"generate_city: preset must be a name in {PRESETS} or a CityConfig, got {type(cfg)}")
    cfg.validate()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"data.prepare.seed={seed!r}: the city's seed must be a whole number >= 0")
    if replace not in (True, False, None, "auto"):  # text such as "flase" was taken as true: a city replaced
        raise ConfigError(
            f"data.prepare.replace={replace!r}: choose auto (replace a city of other settings only in the folder "
            "named for these settings), true or false"
        )
    root = Path(out_dir)
    if not force and _is_complete(root, cfg, seed):
        return root
    _check_ownership(root)
    root.mkdir(parents=True, exist_ok=True)
    with _generation_lock(root):
        if not force and _is_complete(root, cfg, seed):
            return root  # another process (a parallel job of the same sweep) generated it meanwhile
        if replace == "auto":
            replace = isinstance(preset, str) and root.name == city_folder_name(preset, seed)
        _check_replacement(root, cfg, seed, bool(replace))
        _generate_into(root, cfg, seed, progress, workers)
    return root


def city_folder_name(preset: str, seed: int) -> str:
    """The folder data=synthetic generates a city of ``preset`` and ``seed`` in (under paths.data_dir)."""
    return f"city_{preset}_seed{seed}"


def _check_replacement(root: Path, cfg: CityConfig, seed: int, replace: bool) -> None:
    """When ``root`` holds a complete city of other settings: a warning naming the settings that differ, old and
    new, before the generation replaces it; without ``replace``, a DataError naming the settings that would use
    it as it is."""
    manifest = _read_manifest(root)
    if manifest is None:
        return
    expected = _expected_manifest(cfg, seed)
    old = {**(manifest.get("config") or {}), "seed": manifest.get("seed")}
    new = {**expected["config"], "seed": expected["seed"]}
    changed = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
    if manifest.get("format_version") != FORMAT_VERSION:
        changed.insert(0, f"format version {manifest.get('format_version')!r} -> {FORMAT_VERSION!r}")
    if not changed:
        return
    if replace:
        log.warning(
            "%s holds a synthetic city of other settings (%s): replacing it", root.resolve(), ", ".join(changed[:4])
        )
        return
    preset = _preset_of(manifest.get("config") or {})
    use_it = (
        f"To use it as it is, add data.prepare.preset={preset} data.prepare.seed={manifest.get('seed')}"
        if preset is not None and manifest.get("format_version") == FORMAT_VERSION
        else "It matches no preset of this version (or is of an older format): delete it to replace it"
    )
    raise DataError(
        f"data.root={root} holds a synthetic city of other settings than the ones asked for "
        f"({', '.join(changed[:4])}); nothing was written. {use_it}; for the asked-for city, point data.root at "
        "another folder (or leave data.root out)"
    )


def _preset_of(config: dict[str, Any]) -> str | None:
    """The name of the preset whose settings a manifest's config records, if any."""
    for name in PRESETS:
        if _expected_manifest(get_preset(name), 0)["config"] == config:
            return name
    return None


def _generate_into(root: Path, cfg: CityConfig, seed: int, progress: bool, workers: int | None) -> None:
    log.info("generating the synthetic city in %s (seed %d)", root.resolve(), seed)
    write_text_atomic(root / MARKER_NAME, json.dumps(_manifest(cfg, seed), indent=1))
    (root / MANIFEST_NAME).unlink(missing_ok=True)  # an interrupted run must not look complete
    _remove_previous_city(root)

    textures = build_textures(seed)
    plan = _plan_city(cfg, seed, textures)
    tasks = []
    for split_idx in range(len(SPLITS)):
        for kind, poses, names, prefix in (
            (0, plan.db_poses, plan.db_names, ""),
            (1, plan.q_poses, plan.q_names, "queries_real/"),
        ):
            for i, (pose, name) in enumerate(zip(poses[split_idx], names[split_idx])):
                tasks.append((split_idx, kind, i, float(pose[0]), float(pose[1]), float(pose[2]), prefix + name))
    for folder in sorted({str(Path(t[-1]).parent) for t in tasks}):
        (root / folder).mkdir(parents=True, exist_ok=True)

    state = {"cfg": cfg, "seed": seed, "root": root, "textures": textures, "worlds": [d.world for d in plan.districts]}
    if workers is None:  # a pool costs more than it saves on a few images
        workers = min(2, os.cpu_count() or 1) if len(tasks) >= 64 else 1
    n_workers = max(1, int(workers))
    _run_tasks(tasks, state, n_workers, progress)

    for split_idx, split in enumerate(SPLITS):
        origin = np.asarray(plan.districts[split_idx].world.origin_utm)
        save_dbstruct(
            root / "datasets" / f"{DATASET_NAME}_{split}.mat",
            DbStruct(
                which_set=split,
                db_image=plan.db_names[split_idx],
                utm_db=plan.db_poses[split_idx][:, :2] + origin,
                q_image=plan.q_names[split_idx],
                utm_q=plan.q_poses[split_idx][:, :2] + origin,
                pos_dist_thr=25.0,
                pos_dist_sq_thr=625.0,
                non_triv_pos_dist_sq_thr=100.0,
            ),
        )
    write_text_atomic(root / "classes.json", json.dumps({str(k): v for k, v in CLASSES.items()}, indent=1))
    write_text_atomic(root / MANIFEST_NAME, json.dumps(_manifest(cfg, seed), indent=1))  # last: "complete"
    (root / MARKER_NAME).unlink(missing_ok=True)


ensure_city = generate_city

_IMAGE_FILE = re.compile(r"\d{6}_pitch1_yaw\d+(\.jpg|_labels\.png)")


def _remove_previous_city(root: Path) -> None:
    """Remove the images, label maps and split files a city generated here before left (one of other settings
    being replaced, or an interrupted one): the new city overwrites only the names it uses, and the others would
    stay beside it (a smaller preset kept the bigger one's images). Only the generator's own file names in its
    own folders are touched."""
    for folder in (root, root / "queries_real"):
        if not folder.is_dir():
            continue
        for sub in folder.iterdir():
            if not (sub.is_dir() and re.fullmatch(r"\d{3}", sub.name)):
                continue
            for f in sub.iterdir():
                if f.is_file() and _IMAGE_FILE.fullmatch(f.name):
                    f.unlink()
            with contextlib.suppress(OSError):
                sub.rmdir()  # only when empty
    for split in SPLITS:
        (root / "datasets" / f"{DATASET_NAME}_{split}.mat").unlink(missing_ok=True)


def _run_tasks(tasks: list[tuple], state: dict[str, Any], n_workers: int, show: bool) -> None:
    from vpr.progress import progress as progress_bar

    if n_workers <= 1:
        with progress_bar(
            total=len(tasks), desc="synthetic city", unit="img", disable=not show, file=sys.stderr
        ) as bar:
            for task in tasks:
                _render_task(state, task)
                bar.update(1)
        return
    chunk = 16
    chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
    # fork: workers inherit the state without pickling or re-importing the caller's __main__ (train.py
    # would import torch again). The pool is started before tqdm starts its monitor thread.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    pool = ctx.Pool(n_workers, initializer=_worker_init, initargs=(state,))
    try:
        with progress_bar(
            total=len(tasks), desc="synthetic city", unit="img", disable=not show, file=sys.stderr
        ) as bar:
            for done in pool.imap_unordered(_worker_run, chunks):
                bar.update(done)
        pool.close()  # workers finish and exit on their own
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
