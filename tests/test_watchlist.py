"""Watchlist validation and enrollment (with a fake face analyzer: no model needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vigil.errors import ConfigError, VigilError
from vigil.types import AlignedFace, Embedding, Face, ListKind, Observation
from vigil.watchlist import EmbeddingCache, Enroller, load_watchlist


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "watchlist.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BAD_WATCHLISTS = [
    ("bad id", "people:\n  - {id: 'J Doe', name: J, photos: [a.jpg]}\n", "people[0].id"),
    ("missing name", "people:\n  - {id: jdoe, photos: [a.jpg]}\n", "people[0].name: Field required"),
    ("markup in a name", "people:\n  - {id: jdoe, name: '<script>x</script>', photos: [a.jpg]}\n", "people[0].name"),
    ("bad list", "people:\n  - {id: jdoe, name: J, list: maybe, photos: [a.jpg]}\n", "people[0].list"),
    (
        "threshold out of range",
        "people:\n  - {id: jdoe, name: J, threshold: 2, photos: [a.jpg]}\n",
        "people[0].threshold",
    ),
    ("unknown key", "people:\n  - {id: jdoe, name: J, photo: a.jpg}\n", "people[0].photo: unknown key"),
    (
        "duplicate ids",
        "people:\n  - {id: a, name: A, photos: [a.jpg]}\n  - {id: a, name: B, photos: [b.jpg]}\n",
        "repeated: a",
    ),
    ("top-level list", "- {id: a}\n", "watchlist must be a mapping"),
    # photos confined to the watchlist's folder (issue 26, defect 12)
    (
        "parent folders",
        "people:\n  - {id: a, name: A, photos: [../../etc/passwd]}\n",
        "people[0].photos[0]: ../../etc/passwd is outside",
    ),
    (
        "absolute path",
        "people:\n  - {id: a, name: A, photos: [ok.jpg, /etc/shadow]}\n",
        "people[0].photos[1]: /etc/shadow is outside",
    ),
    ("photo_dirs not a list", "photo_dirs: 3\npeople: []\n", "photo_dirs"),
]


@pytest.mark.parametrize("case, text, expected", BAD_WATCHLISTS, ids=[c[0] for c in BAD_WATCHLISTS])
def test_bad_watchlist_gives_one_line(tmp_path, case, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_watchlist(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))
    assert expected in str(info.value)


def test_issue_example_shape_loads_with_defaults(tmp_path):
    path = write(
        tmp_path,
        "people:\n  - id: jdoe\n    name: John Doe\n    list: deny\n    threshold: 0.5\n"
        "    photos: [photos/jdoe_1.jpg, photos/jdoe_2.jpg]\n  - {id: ann, name: Ann, photos: [a.jpg]}\n",
    )
    watchlist = load_watchlist(path)
    assert watchlist.people[0].threshold == 0.5
    assert watchlist.people[1].list is ListKind.DENY
    assert watchlist.photo_path(watchlist.people[0].photos[0]) == tmp_path / "photos/jdoe_1.jpg"


class FakeAnalyzer:
    """Faces are encoded in the image: the number of bright 10x10 blocks on the top row = faces, each 60 px wide;
    a pixel value of 7 at (0, 0) makes the faces 10 px wide. Embedding = unit vector from the image mean colour."""

    def __init__(self) -> None:
        self.calls = 0

    def observe(self, images):
        self.calls += 1
        out = []
        for image in images:
            count = int((image[0, ::20, 0] == 255).sum())
            width = 10.0 if image[0, 0, 1] == 7 else 60.0
            vector = np.array([image[..., 0].mean() + 1, image[..., 1].mean() + 1, 1.0], np.float32)
            vector /= np.linalg.norm(vector)
            faces = []
            for _ in range(count):
                face = Face(np.array([0, 0, width, width], np.float32), 0.9, np.zeros((5, 2), np.float32))
                embedding = None if width < 20 else Embedding(AlignedFace(face, image[:4, :4], 1.0), vector)
                faces.append(Observation(face, embedding))
            out.append(faces)
        return out


def make_photo(path: Path, faces: int, small: bool = False, colour: int = 100) -> Path:
    image = np.full((40, 200, 3), colour, np.uint8)
    for i in range(faces):
        image[0, i * 20, 0] = 255
    if small:
        image[0, 0, 1] = 7
    cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def people_dir(tmp_path):
    make_photo(tmp_path / "one.png", 1)
    make_photo(tmp_path / "one_b.png", 1, colour=140)
    make_photo(tmp_path / "none.png", 0)
    make_photo(tmp_path / "two.png", 2)
    make_photo(tmp_path / "small.png", 1, small=True)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    return tmp_path


PHOTO_CASES = [
    ("none.png", "no face found"),
    ("two.png", "2 faces found, need exactly one"),
    ("small.png", "face too small"),
    ("broken.jpg", "does not decode"),
    ("missing.jpg", "photo not found"),
]


@pytest.mark.parametrize("photo, reason", PHOTO_CASES, ids=[c[0] for c in PHOTO_CASES])
def test_bad_photo_is_reported_and_skipped(people_dir, photo, reason):
    path = write(people_dir, f"people:\n  - {{id: p, name: P, photos: [one.png, {photo}]}}\n")
    enroller = Enroller(FakeAnalyzer(), EmbeddingCache(people_dir / "cache.json", "m1"), min_face_px=20)
    result = enroller.enroll(load_watchlist(path))
    assert [p.id for p in result.people] == ["p"]
    assert len(result.problems) == 1
    assert reason in result.problems[0].reason
    assert result.problems[0].photo == people_dir / photo


@pytest.mark.parametrize("photo", ["none.png", "broken.jpg"])
def test_strict_makes_a_bad_photo_fatal(people_dir, photo):
    path = write(people_dir, f"people:\n  - {{id: p, name: P, photos: [one.png, {photo}]}}\n")
    enroller = Enroller(FakeAnalyzer(), EmbeddingCache(people_dir / "cache.json", "m1"), min_face_px=20)
    with pytest.raises(VigilError, match=photo.replace(".", r"\.")):
        enroller.enroll(load_watchlist(path), strict=True)


def test_prototype_is_the_normalised_mean_of_photos(people_dir):
    path = write(people_dir, "people:\n  - {id: p, name: P, photos: [one.png, one_b.png]}\n")
    result = Enroller(FakeAnalyzer(), EmbeddingCache(people_dir / "c.json", "m1"), 20).enroll(load_watchlist(path))
    person = result.people[0]
    assert person.photo_embeddings.shape == (2, 3)
    expected = person.photo_embeddings.mean(axis=0)
    np.testing.assert_allclose(person.prototype, expected / np.linalg.norm(expected), atol=1e-6)
    assert not np.allclose(person.photo_embeddings[0], person.photo_embeddings[1])


def test_cache_is_reused_and_invalidated_by_model_or_photo_change(people_dir):
    path = write(people_dir, "people:\n  - {id: p, name: P, photos: [one.png]}\n")
    cache_file = people_dir / "cache.json"
    first = Enroller(FakeAnalyzer(), EmbeddingCache(cache_file, "model-a"), 20).enroll(load_watchlist(path))
    assert (first.photos_embedded, first.photos_from_cache) == (1, 0)

    analyzer = FakeAnalyzer()
    again = Enroller(analyzer, EmbeddingCache(cache_file, "model-a"), 20).enroll(load_watchlist(path))
    assert (again.photos_embedded, again.photos_from_cache, analyzer.calls) == (0, 1, 0)

    other_model = Enroller(FakeAnalyzer(), EmbeddingCache(cache_file, "model-b"), 20).enroll(load_watchlist(path))
    assert other_model.photos_embedded == 1

    make_photo(people_dir / "one.png", 1, colour=30)  # the photo changed on disk
    changed = Enroller(FakeAnalyzer(), EmbeddingCache(cache_file, "model-b"), 20).enroll(load_watchlist(path))
    assert changed.photos_embedded == 1
    assert not np.allclose(changed.people[0].prototype, other_model.people[0].prototype)


def test_person_without_usable_photo_is_not_enrolled(people_dir):
    path = write(
        people_dir, "people:\n  - {id: p, name: P, photos: [none.png]}\n  - {id: q, name: Q, photos: [one.png]}\n"
    )
    result = Enroller(FakeAnalyzer(), EmbeddingCache(people_dir / "c.json", "m"), 20).enroll(load_watchlist(path))
    assert [p.id for p in result.people] == ["q"]


def test_person_without_photos_is_listed_but_not_enrolled(people_dir):
    path = write(people_dir, "people:\n  - {id: p, name: P}\n  - {id: q, name: Q, photos: [one.png]}\n")
    watchlist = load_watchlist(path)
    assert [p.id for p in watchlist.people] == ["p", "q"]
    result = Enroller(FakeAnalyzer(), EmbeddingCache(people_dir / "c.json", "m"), 20).enroll(watchlist)
    assert [p.id for p in result.people] == ["q"] and result.problems == []


# ---- photo paths confined (issue 26, defect 12) -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("photo", "photo_dirs", "allowed"),
    [
        ("photos/a.jpg", [], True),
        ("./a.jpg", [], True),
        ("sub/../a.jpg", [], True),
        ("../outside/a.jpg", [], False),
        ("../outside/a.jpg", ["../outside"], True),
        ("{tmp}/outside/a.jpg", ["../outside"], True),  # absolute, inside a listed folder
        ("/etc/passwd", ["../outside"], False),
        ("link/a.jpg", [], False),  # a symbolic link in the folder that points outside
    ],
)
def test_photos_must_lie_in_the_watchlists_folder_or_a_listed_one(tmp_path, photo, photo_dirs, allowed) -> None:
    folder = tmp_path / "watchlist"
    folder.mkdir()
    (tmp_path / "outside").mkdir()
    (folder / "link").symlink_to(tmp_path / "outside")
    photo = photo.format(tmp=tmp_path)
    text = f"photo_dirs: {photo_dirs}\npeople:\n  - {{id: a, name: A, photos: ['{photo}']}}\n"
    path = write(folder, text)
    if allowed:
        assert load_watchlist(path).people[0].photos[0] == Path(photo)
    else:
        with pytest.raises(ConfigError, match=r"people\[0\]\.photos\[0\]: .* is outside the watchlist's folder"):
            load_watchlist(path)


def test_the_shipped_example_watchlists_load() -> None:
    for name in ("watchlist.yaml", "watchlist_absent.yaml"):
        assert load_watchlist(Path(__file__).resolve().parent.parent / "examples" / "hamilton" / name).people


# ---- photos cut short, and people left without a usable photo (issue 26, defect 1) -----------------------------
def test_a_truncated_jpeg_is_reported_not_enrolled(people_dir) -> None:
    """libjpeg decodes a JPEG cut in half without an error (the rest grey): it used to be enrolled silently."""
    noise = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", noise)
    (people_dir / "cut.jpg").write_bytes(data.tobytes()[: int(len(data) * 0.7)])
    assert cv2.imread(str(people_dir / "cut.jpg")) is not None  # what made it slip through
    path = write(
        people_dir, "people:\n  - {id: p, name: P, photos: [cut.jpg]}\n  - {id: q, name: Q, photos: [one.png]}\n"
    )
    result = Enroller(FakeAnalyzer(), EmbeddingCache(people_dir / "c.json", "m"), 20).enroll(load_watchlist(path))
    assert [p.id for p in result.people] == ["q"] and result.unenrolled == ["p"]
    assert "truncated JPEG" in result.problems[0].reason


def test_file_problems_and_unusable_people_need_no_model(people_dir) -> None:
    from vigil.watchlist import file_problems, unusable_people

    (people_dir / "empty.jpg").write_bytes(b"")
    path = write(
        people_dir,
        "people:\n  - {id: a, name: A, photos: [missing.jpg, broken.jpg, empty.jpg]}\n"
        "  - {id: b, name: B, photos: [missing.jpg, one.png]}\n  - {id: c, name: C, photos: [none.png]}\n",
    )
    watchlist = load_watchlist(path)
    problems = file_problems(watchlist)
    assert sorted((p.person_id, p.photo.name) for p in problems) == [
        ("a", "broken.jpg"), ("a", "empty.jpg"), ("a", "missing.jpg"), ("b", "missing.jpg")
    ]  # fmt: skip
    assert unusable_people(watchlist, problems) == ["a"]  # b has one good file; c's face is checked at enrolment
