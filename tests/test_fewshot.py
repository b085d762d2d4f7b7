"""Few-shot watchlists: episode sampler, metrics with known answers, the adapter, and `vigil eval fewshot` end to end
on synthetic embeddings (no shared data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vigil.adapter import (
    Adapter,
    SupportTuning,
    apply,
    init_params,
    inner_adapt,
    load_adapter,
    prototypical_loss,
    save_adapter,
    to_torch,
)
from vigil.errors import ModelError, VigilError
from vigil.eval.episodes import EpisodeArrays, EpisodeSampler, Geometry, load_pool
from vigil.eval.fewshot import (
    EpisodeScores,
    PooledScores,
    check_disjoint,
    dir_at_far,
    open_set_threshold,
    rank1,
    score_episode,
    summarise,
)


def synthetic_pool(
    path: Path,
    ids: int,
    photos: int = 6,
    views: int = 2,
    dim: int = 16,
    shift: float = 0.8,
    noise: float = 0.25,
    seed: int = 0,
    prefix: str = "syn",
    photos_of: dict[int, int] | None = None,
) -> Path:
    """A pool file like pipelines.meta.embed_cache's: identity centres on the sphere, clean photos near them, degraded
    views pushed along one shared 'domain' direction (a shift a linear adapter can learn to undo)."""
    rng = np.random.default_rng(seed)
    domain = rng.normal(size=dim)
    domain /= np.linalg.norm(domain)
    centres = rng.normal(size=(ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    counts = [(photos_of or {}).get(i, photos) for i in range(ids)]
    ident = np.repeat(np.arange(ids), counts)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    clean = unit(centres[ident] + 0.1 * rng.normal(size=(len(ident), dim)))
    degraded = unit(centres[ident][None] + noise * rng.normal(size=(views, len(ident), dim)) + shift * domain)
    files = [f"{prefix}:{i}/{j}.jpg" for i, n in enumerate(counts) for j in range(n)]
    np.savez(
        path,
        files=np.array(files),
        identities=np.array([f"{prefix}:{i}" for i in ident]),
        clean=clean.astype(np.float32),
        clean_found=np.ones(len(ident), bool),
        views=degraded.astype(np.float32),
        view_found=np.ones((views, len(ident)), bool),
        view_face_px=np.full((views, len(ident)), 30.0, np.float32),
    )
    return path


def write_split(path: Path, roles: dict[str, list[str]]) -> Path:
    path.write_text(json.dumps({"roles": roles}))
    return path


# ------------------------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("n_way,k_shot", [(2, 1), (5, 3), (8, 5)])
def test_episode_has_n_listed_people_k_photos_each_and_queries_from_other_photos(tmp_path, n_way, k_shot):
    pool = load_pool(synthetic_pool(tmp_path / "p.npz", 12, photos=7, views=3))
    geometry = Geometry(
        n_way=n_way, k_shot=k_shot, queries_per_identity=4, impostor_identities=3, impostor_queries_per_identity=2
    )
    for episode in EpisodeSampler(pool).episodes(geometry, 20, seed=1):
        assert episode.support.shape == (n_way, k_shot)
        assert len(set(episode.identities)) == n_way
        for label, name in enumerate(episode.identities):
            assert set(pool.identities[episode.support[label]]) == {name}
            mine = episode.query_label == label
            assert mine.sum() == 4
            assert set(pool.identities[episode.query_photo[mine]]) == {name}
            assert not set(episode.query_photo[mine]) & set(
                episode.support[label]
            )  # the camera never sees an enrolment photo
        impostors = episode.query_photo[episode.query_label < 0]
        assert len(impostors) == 3 * 2
        assert not set(pool.identities[impostors]) & set(episode.identities)


def test_same_seed_same_episodes_and_k_changes_them(tmp_path):
    sampler = EpisodeSampler(load_pool(synthetic_pool(tmp_path / "p.npz", 10)))
    one = sampler.episodes(Geometry(n_way=4, k_shot=1), 3, seed=5)
    again = sampler.episodes(Geometry(n_way=4, k_shot=1), 3, seed=5)
    assert all(
        np.array_equal(a.query_photo, b.query_photo) and a.identities == b.identities for a, b in zip(one, again)
    )
    other = sampler.episodes(Geometry(n_way=4, k_shot=3), 3, seed=5)
    assert any(a.identities != b.identities for a, b in zip(one, other))


def test_people_with_too_few_photos_are_never_listed_but_can_be_impostors(tmp_path):
    pool = load_pool(synthetic_pool(tmp_path / "p.npz", 8, photos=6, photos_of={0: 3, 1: 2}))
    sampler = EpisodeSampler(pool)
    assert "syn:0" not in sampler.eligible(3) and "syn:0" in sampler.eligible(2) and "syn:1" not in sampler.eligible(2)
    seen_as_impostor = set()
    for episode in sampler.episodes(Geometry(n_way=5, k_shot=3, impostor_identities=10), 30, seed=0):
        assert "syn:0" not in episode.identities and "syn:1" not in episode.identities
        seen_as_impostor |= set(pool.identities[episode.query_photo[episode.query_label < 0]])
    assert {"syn:0", "syn:1"} <= seen_as_impostor


def test_too_few_people_for_the_watchlist_is_one_clear_error(tmp_path):
    sampler = EpisodeSampler(load_pool(synthetic_pool(tmp_path / "p.npz", 4)))
    with pytest.raises(VigilError, match="4 identities have >= 2 photos.*6 needed"):
        sampler.sample(Geometry(n_way=6, k_shot=1), np.random.default_rng(0))


def test_small_and_missed_camera_faces_are_not_queries(tmp_path):
    path = synthetic_pool(tmp_path / "p.npz", 6, views=2)
    data = dict(np.load(path))
    data["view_face_px"][0] = 12.0  # view 0: too small for the runtime to recognise
    data["view_found"][1, ::2] = False  # view 1: the detector missed every other photo
    np.savez(path, **data)
    pool = load_pool(path, min_face_px=20)
    for episode in EpisodeSampler(pool).episodes(Geometry(n_way=3, k_shot=1, impostor_identities=3), 10, seed=0):
        assert np.all(episode.query_view == 1)
        assert np.all(episode.query_photo % 2 == 1)


# ------------------------------------------------------------------------------------------- metrics


def test_perfect_embeddings_score_everything():
    eye = np.eye(6, dtype=np.float32)
    arrays = EpisodeArrays(
        support=eye[:3, None, :],
        support_views=eye[None, :3, None, :],
        support_view_found=np.ones((1, 3, 1), bool),
        queries=eye[[0, 1, 2, 3, 4, 5]],
        labels=np.array([0, 1, 2, -1, -1, -1]),
    )
    scores = score_episode(arrays, None)
    assert scores.correct.all() and np.allclose(scores.genuine_top, 1.0) and np.allclose(scores.impostor_top, 0.0)
    pooled = PooledScores.of([scores])
    assert rank1(pooled) == 1.0 and dir_at_far(pooled, 1e-3)[0] == 1.0


def test_mean_prototype_is_the_renormalised_mean_of_the_support():
    support = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)  # one person, two photos
    query = np.array([[1, 1, 0]], np.float32) / np.sqrt(2)
    arrays = EpisodeArrays(
        support=np.concatenate([support, np.array([[[0, 0, 1], [0, 0, 1]]], np.float32)]),
        support_views=np.zeros((1, 2, 2, 3), np.float32),
        support_view_found=np.zeros((1, 2, 2), bool),
        queries=query,
        labels=np.array([0]),
    )
    assert score_episode(arrays, None).genuine_top == pytest.approx([1.0])


# hand-made episode scores: two episodes; genuine (correct, top score); impostor top scores
HAND = [
    EpisodeScores(np.array([True, True, False, True]), np.array([0.9, 0.6, 0.95, 0.4]), np.array([0.5, 0.3])),
    EpisodeScores(np.array([True, False]), np.array([0.8, 0.7]), np.array([0.7, 0.2])),
]


@pytest.mark.parametrize(
    "far,threshold,expected_dir",
    [
        (0.0, 0.7, 2 / 6),  # no false alarm allowed: t = the best impostor; correct and above: 0.9, 0.8
        (0.25, 0.5, 3 / 6),  # one of four impostors may pass: t = 0.5; correct and above: 0.9, 0.6, 0.8
        (0.5, 0.3, 4 / 6),  # two may pass: t = 0.3; 0.9, 0.6, 0.4, 0.8 (0.95 is the wrong person)
    ],
)
def test_dir_at_far_known_answers(far, threshold, expected_dir):
    pooled = PooledScores.of(HAND)
    got_dir, got_threshold = dir_at_far(pooled, far)
    assert got_threshold == pytest.approx(threshold)
    assert got_dir == pytest.approx(expected_dir)
    assert rank1(pooled) == pytest.approx(4 / 6)


def test_weighted_threshold_counts_each_impostor_as_often_as_its_episode():
    impostor = np.array([0.9, 0.8, 0.1, 0.05])
    # unit weights, FAR 0.25: one of four may pass -> threshold is the second best
    assert open_set_threshold(impostor, 0.25) == pytest.approx(0.8)
    # the first impostor drawn three times: 6 in all, floor(0.25 * 6) = 1 may pass, but the best alone is 3 -> 0.9
    assert open_set_threshold(impostor, 0.25, np.array([3, 1, 1, 1])) == pytest.approx(0.9)
    # an impostor drawn zero times is not counted: of the three left, one may pass at FAR 0.34 (0.8), not two
    assert open_set_threshold(impostor, 0.34, np.array([0, 1, 1, 1])) == pytest.approx(0.1)
    assert open_set_threshold(impostor, 0.34) == pytest.approx(0.8)


def test_bootstrap_interval_contains_the_point_and_mean_has_no_delta():
    rng = np.random.default_rng(0)
    scores = [EpisodeScores(rng.random(10) < 0.7, rng.random(10), rng.random(20) * 0.8) for _ in range(40)]
    better = [EpisodeScores(np.ones(10, bool), s.genuine_top + 0.5, s.impostor_top) for s in scores]
    out = summarise({"mean": PooledScores.of(scores), "better": PooledScores.of(better)}, resamples=200, seed=0)
    for row in out.values():
        lo, hi = row["rank1_ci95"]
        assert lo <= row["rank1"] <= hi
    assert "delta_rank1_vs_mean" not in out["mean"]
    assert out["better"]["delta_dir_far_1e-2_vs_mean_ci95"][0] > 0  # strictly better on every episode


# ------------------------------------------------------------------------------------------- adapter


def test_fresh_adapter_is_the_identity_and_round_trips(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for kind in ("linear", "mlp"):
        params = init_params(8, kind, hidden=4)
        assert np.allclose(apply(params, x), x, atol=1e-6)
        adapter = Adapter(params, "protonet", 12.5, SupportTuning(3, 0.1), frozenset({"a:1"}), {"note": 1})
        save_adapter(tmp_path / f"{kind}.npz", adapter)
        back = load_adapter(tmp_path / f"{kind}.npz")
        assert (
            back.kind == kind and back.method == "protonet" and back.scale == 12.5 and back.tta == SupportTuning(3, 0.1)
        )
        assert back.train_identities == {"a:1"} and back.meta["note"] == 1


def test_a_file_that_is_not_an_adapter_is_refused(tmp_path):
    np.savez(tmp_path / "x.npz", A=np.zeros((2, 2)))
    with pytest.raises(ModelError, match="not an adapter file"):
        load_adapter(tmp_path / "x.npz")
    with pytest.raises(ModelError, match="not found"):
        load_adapter(tmp_path / "missing.npz")


def test_adapter_trained_on_a_test_identity_is_refused():
    adapter = Adapter(init_params(4), "protonet", train_identities=frozenset({"celeba:1", "celeba:2"}))
    check_disjoint(adapter, Path("a.npz"), {"celeba:3", "lfw:x"})
    with pytest.raises(VigilError, match="trained on 1 of the test identities"):
        check_disjoint(adapter, Path("a.npz"), {"celeba:2", "lfw:x"})


def test_prototypical_loss_value_closed_and_open_set():
    import torch

    params = to_torch(init_params(3))
    support = torch.tensor([[[1.0, 0, 0]], [[0, 1.0, 0]]])
    queries = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    labels = torch.tensor([0, -1])
    scale = 3.0
    closed = prototypical_loss(params, support, queries, labels, scale)  # the impostor is ignored
    assert float(closed.detach()) == pytest.approx(np.log1p(np.exp(-scale)), rel=1e-5)
    opened = prototypical_loss(params, support, queries, labels, scale, unknown=0.5)
    first = -scale + np.log(np.exp(scale) + 1 + np.exp(scale * 0.5))  # logits (s, 0, s/2), target 0
    second = -scale * 0.5 + np.log(1 + 1 + np.exp(scale * 0.5))  # logits (0, 0, s/2), target unknown
    assert float(opened.detach()) == pytest.approx((first + second) / 2, rel=1e-5)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_prototypical_loss_gradient_matches_finite_differences(kind):
    import torch

    rng = np.random.default_rng(1)
    params = {
        k: torch.tensor(v + 0.1 * rng.normal(size=v.shape), dtype=torch.float64, requires_grad=True)
        for k, v in init_params(4, kind, hidden=3, seed=2).items()
    }
    support = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(3, 2, 4))), dim=-1)
    queries = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(5, 4))), dim=-1)
    labels = torch.tensor([0, 1, 2, -1, 1])
    names = list(params)

    def loss(*tensors):
        return prototypical_loss(dict(zip(names, tensors)), support, queries, labels, 7.0, unknown=0.3)

    assert torch.autograd.gradcheck(loss, tuple(params.values()), eps=1e-6, atol=1e-5)


def test_inner_adapt_is_plain_sgd():
    import torch

    w, a, lr, steps = torch.tensor([3.0, -1.0]), torch.tensor([1.0, 1.0]), 0.25, 4
    adapted = inner_adapt({"w": w}, lambda p: 0.5 * ((p["w"] - a) ** 2).sum(), steps, lr)
    # each step: w - a shrinks by (1 - lr)
    assert np.allclose(adapted["w"].detach().numpy(), (a + (1 - lr) ** steps * (w - a)).numpy())
    assert np.allclose(w.numpy(), [3.0, -1.0])  # the original is untouched


def test_test_time_tuning_changes_scores_only_for_adapters_that_have_it():
    rng = np.random.default_rng(0)
    support = rng.normal(size=(3, 1, 8)).astype(np.float32)
    support /= np.linalg.norm(support, axis=-1, keepdims=True)
    views = support[None] + 0.3 * rng.normal(size=(2, 3, 1, 8)).astype(np.float32)
    arrays = EpisodeArrays(support, views, np.ones((2, 3, 1), bool), views[0, :, 0], np.array([0, 1, 2]))
    plain = score_episode(arrays, Adapter(init_params(8), "protonet"))
    assert np.allclose(plain.genuine_top, score_episode(arrays, None).genuine_top, atol=1e-6)
    tuned = score_episode(arrays, Adapter(init_params(8), "mean_ft", tta=SupportTuning(5, 0.5)))
    assert not np.allclose(tuned.genuine_top, plain.genuine_top)


# ------------------------------------------------------------------------------------------- command


@pytest.mark.slow
def test_vigil_eval_fewshot_writes_one_row_per_method_and_k(tmp_path):
    from vigil.cli import main

    pool = synthetic_pool(tmp_path / "pool.npz", 30)
    ids = [f"syn:{i}" for i in range(30)]
    split = write_split(tmp_path / "split.json", {"train": ids[:10], "val": [], "test": ids[10:]})
    adapter = tmp_path / "protonet.npz"
    save_adapter(adapter, Adapter(init_params(16), "protonet", train_identities=frozenset(ids[:10])))
    out = tmp_path / "report.json"
    code = main(
        [
            "eval",
            "fewshot",
            "--pool",
            str(pool),
            "--split",
            str(split),
            "--adapter",
            str(adapter),
            "--k",
            "1",
            "3",
            "--n-way",
            "5",
            "--impostor-identities",
            "5",
            "--episodes",
            "20",
            "--resamples",
            "50",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert [(r["method"], r["k"]) for r in report["rows"]] == [
        ("mean", 1),
        ("protonet", 1),
        ("mean", 3),
        ("protonet", 3),
    ]
    for row in report["rows"]:
        assert 0 <= row["dir_far_1e-3"] <= row["dir_far_1e-2"] <= row["rank1"] <= 1
        assert row["identities"] == 20
    identity = report["rows"][1]  # the identity adapter scores exactly like the mean prototype
    assert identity["rank1"] == report["rows"][0]["rank1"] and identity["delta_dir_far_1e-3_vs_mean"] == 0
    assert out.with_suffix(".png").is_file()
    bad = write_split(tmp_path / "bad.json", {"train": [], "val": [], "test": ids[:12]})
    assert (
        main(
            ["eval", "fewshot", "--pool", str(pool), "--split", str(bad), "--adapter", str(adapter), "--json", str(out)]
        )
        == 2
    )
