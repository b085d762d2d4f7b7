"""pipelines.meta: the episodic updates on a tiny model with known gradients, the identity split, the embedding
cache's pure parts (with fake stages) and a smoke meta-training of every method on synthetic embeddings."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from pipelines.meta.embed_cache import (
    ChunkViews,
    PhotoRef,
    ViewEmbedder,
    concat_chunks,
    largest_central_face,
    list_pool,
    photo_index,
)
from pipelines.meta.splits import fewshot_split
from pipelines.meta.train import (
    METHODS,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    train_method,
    training_episode,
    val_episodes,
    val_geometry,
)
from pipelines.meta.updates import first_order_meta_gradient, reptile_direction, reptile_update
from pipelines.recognizer.faces_dataset import validation_identities
from tests.test_fewshot import synthetic_pool, write_split
from vigil.errors import VigilError
from vigil.eval.episodes import EpisodeSampler, load_pool
from vigil.eval.geometry import FLAG_FIELDS, Geometry, geometry_from_args
from vigil.types import Face

# ------------------------------------------------------------------------------------------- updates


def _quadratic(target):
    return lambda p: 0.5 * ((p["w"] - target) ** 2).sum()


@pytest.mark.parametrize("steps,lr", [(1, 0.5), (3, 0.25), (5, 0.1)])
def test_first_order_maml_gradient_is_the_query_gradient_at_the_adapted_point(steps, lr):
    import torch

    w = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    a, c = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.0, 2.0, -1.0])
    grads, adapted, loss = first_order_meta_gradient({"w": w}, _quadratic(a), _quadratic(c), steps, lr)
    w_k = a + (1 - lr) ** steps * (w.detach() - a)  # SGD on 0.5|w - a|^2 shrinks w - a by (1 - lr) each step
    assert np.allclose(adapted["w"].detach().numpy(), w_k.numpy())
    assert np.allclose(grads["w"].numpy(), (w_k - c).numpy())  # d/dw' 0.5|w' - c|^2, no second-order term
    assert loss == pytest.approx(float(0.5 * ((w_k - c) ** 2).sum()))


def test_first_order_maml_also_returns_gradients_of_outer_only_parameters():
    import torch

    w, t = torch.tensor([1.0], requires_grad=True), torch.tensor(3.0, requires_grad=True)
    grads, _, _ = first_order_meta_gradient(
        {"w": w}, _quadratic(torch.tensor([0.0])), lambda p: t * p["w"].sum(), 2, 0.5, also={"t": t}
    )
    assert float(grads["t"]) == pytest.approx(0.25)  # w after two steps toward 0 at rate 0.5
    assert float(grads["w"]) == pytest.approx(3.0)


def test_reptile_moves_a_fraction_toward_the_adapted_parameters():
    import torch

    phi, adapted = {"w": torch.tensor([0.0, 4.0])}, {"w": torch.tensor([2.0, 0.0])}
    assert np.allclose(reptile_update(phi, adapted, 0.25)["w"].numpy(), [0.5, 3.0])
    direction = reptile_direction(phi, adapted)["w"]
    assert np.allclose(direction.numpy(), [-2.0, 4.0])
    # an SGD step of rate epsilon against the direction is the Reptile update
    assert np.allclose((phi["w"] - 0.25 * direction).numpy(), [0.5, 3.0])


# ------------------------------------------------------------------------------------------- split


def test_fewshot_split_roles_are_disjoint_and_test_is_what_no_trained_part_saw():
    celeba = [str(7000 + i) for i in range(299)]
    lfw = ["Aaron_Peirsol", "George_W_Bush"]
    roles = fewshot_split(celeba, lfw)
    train, val, test = (set(roles[r]) for r in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train) + len(val) + sum(i.startswith("celeba:") for i in test) == 299
    member_val = validation_identities(celeba, 0.15, 0)  # what the recognizer's fine-tuned member held out
    assert {i for i in test if i.startswith("celeba:")} == {f"celeba:{i}" for i in member_val}
    assert {"lfw:Aaron_Peirsol", "lfw:George_W_Bush"} <= test
    assert len(val) == round(0.15 * (299 - len(member_val)))
    assert roles == fewshot_split(list(reversed(celeba)), lfw)  # independent of listing order


# ------------------------------------------------------------------------------------------- embedding cache


def _face(x1, y1, x2, y2, score=0.9):
    landmarks = np.array(
        [
            [x1 + 0.3 * (x2 - x1), y1 + 0.4 * (y2 - y1)],
            [x1 + 0.7 * (x2 - x1), y1 + 0.4 * (y2 - y1)],
            [(x1 + x2) / 2, y1 + 0.6 * (y2 - y1)],
            [x1 + 0.35 * (x2 - x1), y1 + 0.8 * (y2 - y1)],
            [x1 + 0.65 * (x2 - x1), y1 + 0.8 * (y2 - y1)],
        ],
        np.float32,
    )
    return Face(box=np.array([x1, y1, x2, y2], np.float32), score=score, landmarks=landmarks)


def test_largest_central_face_prefers_size_then_centre_and_ignores_weak_faces():
    big_edge, small_centre, weak = _face(0, 0, 60, 60), _face(80, 80, 120, 120), _face(50, 50, 150, 150, score=0.1)
    assert largest_central_face([small_centre, big_edge, weak], (200, 200, 3), 0.3) is big_edge
    assert largest_central_face([small_centre, _face(0, 0, 45, 45)], (200, 200, 3), 0.3) is small_centre
    assert largest_central_face([weak], (200, 200, 3), 0.3) is None


def test_photo_index_is_stable_and_list_pool_keeps_eligible_people(tmp_path):
    assert photo_index(PhotoRef("lfw", "A", "A/A_0001.jpg")) == photo_index(PhotoRef("lfw", "A", "A/A_0001.jpg"))
    assert photo_index(PhotoRef("lfw", "A", "A/A_0001.jpg")) != photo_index(PhotoRef("celeba", "A", "A/A_0001.jpg"))
    for name, count in (("few", 2), ("many", 6)):
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"{i}.jpg").write_bytes(b"")
    refs = list_pool("lfw", tmp_path, min_images=3, max_per_person=4)
    assert [r.rel for r in refs] == [f"many/{i}.jpg" for i in range(4)]


class _FakeStages:
    """Detector: one face covering the middle of each image (none in images whose first pixel is 255).
    Degrader: halves the image. Aligner: a chip holding the image's mean. Embedder: (mean, 1) normalised."""

    dim = 2

    def detect(self, images):
        return [
            []
            if image[0, 0, 0] == 255
            else [_face(image.shape[1] / 4, image.shape[0] / 4, 3 * image.shape[1] / 4, 3 * image.shape[0] / 4)]
            for image in images
        ]

    def degrade_scene(self, image, face_width_px, rng):
        return image[::2, ::2].copy(), 0.5

    def align(self, image, face):
        return type("Aligned", (), {"chip": np.full((4, 4, 3), image.mean(), np.uint8), "face": face})()

    def embed(self, chips):
        v = np.stack([[c.mean() / 255.0, 1.0] for c in chips]).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_view_embedder_records_clean_and_degraded_views_and_misses():
    fake = _FakeStages()
    embedder = ViewEmbedder(fake.detect, fake, fake, fake, largest_central_face, seed=0, views=2)
    photos = [np.full((40, 40, 3), 100, np.uint8), np.full((40, 40, 3), 255, np.uint8)]
    refs = [PhotoRef("celeba", "1", "1/a.jpg"), PhotoRef("celeba", "2", "2/b.jpg")]
    out = embedder.run(photos, refs)
    assert out.clean_found.tolist() == [True, False]
    assert out.clean_face_px[0] == pytest.approx(20.0)
    assert out.view_found.tolist() == [[True, False], [True, False]]  # no enrolment face: no camera views either
    assert np.allclose(out.view_target_px[:, 0], 10.0) and np.allclose(out.view_face_px[:, 0], 10.0)
    assert np.allclose(out.views[:, 0], out.clean[0]) and not out.views[:, 1].any()
    both = concat_chunks([out, out])
    assert both.clean.shape == (4, 2) and both.views.shape == (2, 4, 2) and both.view_found.shape == (2, 4)
    assert isinstance(both, ChunkViews)


# ------------------------------------------------------------------------------------------- training


def _pools(tmp_path, shift=1.2):
    pool_file = synthetic_pool(tmp_path / "pool.npz", 60, photos=6, views=2, shift=shift, noise=0.3)
    ids = [f"syn:{i}" for i in range(60)]
    split = write_split(tmp_path / "split.json", {"train": ids[:40], "val": ids[40:], "test": []})
    pool = load_pool(pool_file)
    return pool.restrict(ids[:40]), pool.restrict(ids[40:]), pool_file, split


# ------------------------------------------------------------------------------------- one geometry


def _train_args(flags: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig())
    return parser.parse_args(flags)


def _fewshot_args(flags: list[str]):
    from vigil.cli import build_parser

    return build_parser().parse_args(
        ["eval", "fewshot", "--pool", "p.npz", "--split", "s.json", "--json", "o.json"] + flags
    )


# What the training episodes and validation were before TrainConfig held a Geometry (TrainConfig's own fields
# n_way, k_max, queries_per_identity, impostor_identities, impostor_queries_per_identity; val_episodes' literals).
TRAIN_GEOMETRY_BEFORE = [
    ("n_way", 20),
    ("k_shot", 5),  # k_max: each step draws K from 1..5
    ("queries_per_identity", 5),
    ("impostor_identities", 20),
    ("impostor_queries_per_identity", 2),
]
VAL_GEOMETRY_BEFORE = [
    ("n_way", 20),
    ("k_shot", 1),
    ("queries_per_identity", 5),
    ("impostor_identities", 100),
    ("impostor_queries_per_identity", 2),
]
BENCHMARK_GEOMETRY_BEFORE = VAL_GEOMETRY_BEFORE  # vigil eval fewshot with no geometry flag, at K = 1


@pytest.mark.parametrize("name, before", TRAIN_GEOMETRY_BEFORE)
def test_default_training_geometry_is_unchanged_field_by_field(name, before):
    assert getattr(TrainConfig().episode, name) == before
    assert getattr(config_from_args(_train_args([])).episode, name) == before


@pytest.mark.parametrize("name, before", VAL_GEOMETRY_BEFORE)
def test_default_validation_geometry_is_unchanged_field_by_field(name, before):
    assert getattr(val_geometry(TrainConfig().episode, eligible=40), name) == before


@pytest.mark.parametrize("name, before", BENCHMARK_GEOMETRY_BEFORE)
def test_default_benchmark_geometry_is_unchanged_field_by_field(name, before):
    assert getattr(geometry_from_args(_fewshot_args([]), k_shot=1), name) == before


def test_validation_leaves_people_to_be_impostors_in_a_small_val_split():
    assert val_geometry(TrainConfig().episode, eligible=12).n_way == 10
    assert val_geometry(Geometry(n_way=5, k_shot=3), eligible=40) == Geometry(n_way=5, k_shot=1)


def test_the_default_train_config_is_what_the_cli_builds_without_flags():
    assert config_from_args(_train_args([])) == TrainConfig()


@pytest.mark.parametrize(
    "flags, name, value",
    [
        (["--n-way", "7"], "n_way", 7),
        (["--queries-per-identity", "3"], "queries_per_identity", 3),
        (["--impostor-identities", "0"], "impostor_identities", 0),
        (["--impostor-queries-per-identity", "4"], "impostor_queries_per_identity", 4),
    ],
)
def test_a_geometry_flag_means_the_same_field_for_training_and_the_benchmark(flags, name, value):
    trained = config_from_args(_train_args(flags)).episode
    scored = geometry_from_args(_fewshot_args(flags), k_shot=1)
    assert getattr(trained, name) == getattr(scored, name) == value
    others = set(FLAG_FIELDS) - {name}
    assert all(getattr(trained, f) == getattr(TrainConfig().episode, f) for f in others)
    assert all(getattr(scored, f) == getattr(Geometry(), f) for f in others)


def test_k_max_is_the_training_geometrys_largest_k_and_other_flags_stay_config_fields():
    cfg = config_from_args(_train_args(["--k-max", "3", "--lr", "0.01", "--inner-steps", "2"]))
    assert cfg == replace(TrainConfig(), episode=Geometry(k_shot=3, impostor_identities=20), lr=0.01, inner_steps=2)


def test_every_geometry_field_has_a_flag_or_is_k():
    from dataclasses import fields

    assert set(FLAG_FIELDS) | {"k_shot"} == {f.name for f in fields(Geometry)}


@pytest.mark.parametrize(
    "geometry",
    [
        Geometry(n_way=5, k_shot=1, queries_per_identity=3, impostor_identities=4, impostor_queries_per_identity=2),
        Geometry(n_way=3, k_shot=3, queries_per_identity=2, impostor_identities=6, impostor_queries_per_identity=1),
        Geometry(n_way=8, k_shot=2, queries_per_identity=4, impostor_identities=0, impostor_queries_per_identity=1),
    ],
)
def test_a_training_episode_and_a_benchmark_episode_of_one_geometry_have_the_same_shape(tmp_path, geometry):
    pool = load_pool(synthetic_pool(tmp_path / "p.npz", 20, photos=6, views=3))
    sampler = EpisodeSampler(pool)
    rng = np.random.default_rng(0)
    for _ in range(10):
        trained = training_episode(sampler, geometry, rng)
        k = trained.support.shape[1]
        assert 1 <= k <= geometry.k_shot
        (scored,) = sampler.episode_arrays(geometry.with_k_shot(k), 1, seed=3)
        for name in ("support", "support_views", "support_view_found", "queries", "labels"):
            assert getattr(trained, name).shape == getattr(scored, name).shape, name
        for arrays in (trained, scored):
            assert arrays.support.shape[:2] == (geometry.n_way, k)
            assert (arrays.labels >= 0).sum() == geometry.n_way * geometry.queries_per_identity
            assert (arrays.labels < 0).sum() == geometry.impostor_identities * geometry.impostor_queries_per_identity


SMOKE = TrainConfig(
    budget_rows=6000,
    eval_every_rows=3000,
    episode=Geometry(n_way=5, k_shot=3, impostor_identities=5),
    inner_steps=2,
    batch_size=50,
    val_episodes=10,
    patience=3,
)


@pytest.mark.parametrize("method", METHODS)
def test_smoke_meta_training_of_each_method(tmp_path, method):
    train, val, _, _ = _pools(tmp_path)
    cfg = SMOKE
    adapter, history = train_method(method, train, val_episodes(val, cfg), cfg, log=lambda _: None)
    assert adapter.method == method and adapter.dim == 16
    assert (adapter.tta is not None) == (method in ("reptile", "fomaml"))
    assert adapter.train_identities == train.identity_set()
    assert history["rows"] >= cfg.eval_every_rows and len(history["val"]) >= 2
    assert all(np.isfinite(loss) for _, loss in history["loss"])


@pytest.mark.slow
def test_protonet_learns_to_undo_a_domain_shift(tmp_path):
    """Degraded views share one shift direction; the mean prototype suffers from it, a trained adapter must not."""
    train, val, _, _ = _pools(tmp_path, shift=1.5)
    cfg = replace(SMOKE, budget_rows=60_000, eval_every_rows=10_000, val_episodes=30, patience=6)
    _, history = train_method("protonet", train, val_episodes(val, cfg), cfg, log=lambda _: None)
    assert history["best_val"] > history["val"][0][1] + 0.1


@pytest.mark.slow
def test_train_cli_writes_every_method_and_the_plain_fine_tuning_rows(tmp_path):
    from pipelines.meta.train import main
    from vigil.adapter import load_adapter

    _, _, pool_file, split = _pools(tmp_path)
    out = tmp_path / "run"
    assert (
        main(
            [
                "--pool",
                str(pool_file),
                "--split",
                str(split),
                "--out",
                str(out),
                "--budget-rows",
                "3000",
                "--eval-every-rows",
                "3000",
                "--n-way",
                "5",
                "--impostor-identities",
                "5",
                "--val-episodes",
                "5",
                "--inner-steps",
                "1",
            ]
        )
        == 0
    )
    for name in (*METHODS, "mean_ft", "batch_control_ft"):
        adapter = load_adapter(out / f"{name}.npz")
        assert adapter.method == name
    assert load_adapter(out / "mean_ft.npz").train_identities == frozenset()
    assert json.loads((out / "protonet.json").read_text())["history"]["rows"] >= 3000
    overlap = write_split(tmp_path / "overlap.json", {"train": ["syn:1"], "val": ["syn:2"], "test": ["syn:1"]})
    assert main(["--pool", str(pool_file), "--split", str(overlap), "--out", str(out)]) == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("all", METHODS),
        ("reptile", ("reptile",)),
        ("fomaml, protonet,fomaml", ("fomaml", "protonet")),
        ("protonet,maml", None),
        (",", None),
    ],
)
def test_method_list_keeps_order_and_refuses_unknown_names(text, expected):
    from pipelines.meta.train import parse_methods
    from vigil.errors import VigilError

    if expected is None:
        with pytest.raises(VigilError, match="--method"):
            parse_methods(text)
    else:
        assert parse_methods(text) == expected


def test_train_cli_with_some_methods_writes_only_their_rows(tmp_path):
    from pipelines.meta.train import main

    _, _, pool_file, split = _pools(tmp_path)
    out = tmp_path / "run"
    args = ["--pool", str(pool_file), "--split", str(split), "--out", str(out), "--method", "protonet"]
    small = ["--budget-rows", "1000", "--eval-every-rows", "1000", "--n-way", "5", "--impostor-identities", "5"]
    assert main(args + small + ["--val-episodes", "3"]) == 0
    assert sorted(p.name for p in out.glob("*.npz")) == ["mean_ft.npz", "protonet.npz"]  # no control: no control row


def test_lfw_check_compares_adapters_fold_by_fold(tmp_path):
    from pipelines.meta.lfw_check import compare
    from vigil.adapter import Adapter, init_params, save_adapter

    rng = np.random.default_rng(0)
    first = rng.normal(size=(400, 8)).astype(np.float32)
    same = np.arange(400) % 2 == 0
    second = np.where(same[:, None], first + 0.5 * rng.normal(size=(400, 8)), rng.normal(size=(400, 8))).astype(
        np.float32
    )
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    second /= np.linalg.norm(second, axis=1, keepdims=True)
    pairs = {"first": first, "second": second, "same": same, "fold": np.arange(400) // 40}
    save_adapter(tmp_path / "identity.npz", Adapter(init_params(8), "protonet"))
    params = init_params(8)
    params["A"] = np.diag([0.0] + [-1.0] * 7).astype(np.float32)  # keeps only the first coordinate
    save_adapter(tmp_path / "bad.npz", Adapter(params, "broken"))
    rows = compare(pairs, [tmp_path / "identity.npz", tmp_path / "bad.npz"])
    assert [r["method"] for r in rows] == ["mean", "protonet", "broken"]
    assert rows[1]["accuracy"] == rows[0]["accuracy"] and rows[1]["delta_accuracy"] == 0 and rows[1]["folds_worse"] == 0
    assert rows[2]["delta_accuracy"] < -0.1 and rows[2]["folds_worse"] >= 8


def test_pool_pairs_pair_every_same_person_photo_pair_and_as_many_strangers(tmp_path):
    from pipelines.meta.lfw_check import pool_pairs

    path = synthetic_pool(tmp_path / "pool.npz", ids=12, photos=3, photos_of={0: 1, 1: 4})
    pool = load_pool(path)
    pairs = pool_pairs(pool, seed=1)
    same_count = 10 * 3 + 0 + 6  # C(3,2) for ten people, none for the one-photo person, C(4,2)
    assert pairs["same"].sum() == same_count and len(pairs["same"]) == 2 * same_count
    rows = {tuple(v) for v in pool.clean}
    assert all(tuple(v) in rows for v in pairs["first"]) and all(tuple(v) in rows for v in pairs["second"])
    people_of = {tuple(v): n for v, n in zip(pool.clean, pool.identities)}
    first = [people_of[tuple(v)] for v in pairs["first"]]
    second = [people_of[tuple(v)] for v in pairs["second"]]
    assert all((a == b) == s for a, b, s in zip(first, second, pairs["same"]))
    fold_of_person: dict[str, set[int]] = {}
    for person, fold in zip(first, pairs["fold"]):
        fold_of_person.setdefault(person, set()).add(int(fold))
    assert all(len(folds) == 1 for folds in fold_of_person.values())  # folds are folds of people
    with pytest.raises(VigilError, match="two people"):
        pool_pairs(pool.restrict({"syn:0"}))
