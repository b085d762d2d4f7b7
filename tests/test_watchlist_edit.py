"""Watchlist edits: atomic YAML writes (SIGKILL mid-edit leaves the old or the new file), photos beside it, confined
deletes; hot reload keeps the last good watchlist and the rules state of unchanged people."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vigil.live import LiveHub, PhotoVerdict
from vigil.store.db import ConflictError, NotFoundError
from vigil.store.watchlist import WatchlistEditor, WatchlistFileError, photo_id
from vigil.types import ListKind, Person
from vigil.watchlist import EnrollmentResult, PersonEntry, PhotoProblem, load_watchlist
from vigil.watchlist_reload import WatchlistReloader, changed_people

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def editor(tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"not ours")
    folder = tmp_path / "wl"
    folder.mkdir()
    text = f"# hand written\nphoto_dirs: [..]\npeople:\n  - {{id: ann, name: Ann, photos: [{outside}]}}\n"
    return WatchlistEditor(write(folder / "watchlist.yaml", text))  # a photo outside the folder, in a listed one


def test_create_update_and_previous_version_kept(editor):
    editor.create(PersonEntry(id="jdoe", name="John Doe", list=ListKind.VIP, threshold=0.8))
    assert [p.id for p in load_watchlist(editor.path).people] == ["ann", "jdoe"]
    assert load_watchlist(editor.path).photo_dirs == (Path(".."),)  # an edit keeps the folders photos may come from
    assert "# hand written" in editor.path.with_name("watchlist.yaml.prev").read_text()
    editor.update("jdoe", {"name": "Johnny", "threshold": None})
    person = editor.person("jdoe")
    assert (person.name, person.list, person.threshold) == ("Johnny", ListKind.VIP, None)
    with pytest.raises(ConflictError, match="already exists"):
        editor.create(PersonEntry(id="jdoe", name="Again"))
    with pytest.raises(NotFoundError):
        editor.update("nobody", {"name": "X"})


@pytest.mark.parametrize("changes", [{"name": "<script>alert(1)</script>"}, {"threshold": 2.0}, {"list": "maybe"}])
def test_an_invalid_change_writes_nothing(editor, changes):
    before = editor.path.read_bytes()
    with pytest.raises(ValueError):
        editor.update("ann", changes)
    assert editor.path.read_bytes() == before


def test_photos_go_beside_the_file_and_deleting_removes_only_ours(editor, tmp_path):
    relative = editor.add_photo("ann", b"\xff\xd8 a jpeg", ".jpg")
    stored = editor.path.parent / relative
    assert stored.read_bytes() == b"\xff\xd8 a jpeg" and relative.parts[:2] == ("photos", "ann")
    with pytest.raises(ConflictError, match="already enrolled"):
        editor.add_photo("ann", b"\xff\xd8 a jpeg", ".jpg")
    deleted = editor.delete("ann")
    assert deleted.removed == [relative] and len(deleted.kept) == 1
    assert not stored.exists() and (tmp_path / "elsewhere.jpg").exists()
    assert load_watchlist(editor.path).people == []


def test_remove_photo_by_id(editor):
    relative = editor.add_photo("ann", b"png bytes", ".png")
    path, deleted = editor.remove_photo("ann", photo_id(relative))
    assert path == relative and deleted and [str(p) for p in editor.person("ann").photos] != [str(relative)]
    with pytest.raises(NotFoundError):
        editor.remove_photo("ann", "0" * 16)


def test_a_broken_file_refuses_edits_until_fixed(editor):
    write(editor.path, "people: [ {id: ann, name: \n")
    with pytest.raises(WatchlistFileError, match="fix it by hand"):
        editor.create(PersonEntry(id="x", name="X"))
    assert editor.path.read_text() == "people: [ {id: ann, name: \n"


WRITER = textwrap.dedent("""
    import sys
    from vigil.store.watchlist import WatchlistEditor
    from vigil.watchlist import PersonEntry
    editor = WatchlistEditor(sys.argv[1])
    i = 0
    while True:
        editor.create(PersonEntry(id=f"new{i}", name="N" * 60, notes="x" * 200))
        i += 1
        if i == 1:
            print("wrote", flush=True)
""")


def test_sigkill_during_edits_leaves_the_old_or_the_new_file(tmp_path):
    """A writer adds people in a loop; it is killed with SIGKILL at random moments; every time, the file (and its
    .prev) load, and hold the base people plus new0..newK-1 for some K: never a torn or half-applied file."""
    base = "".join(f"  - {{id: base{i}, name: Base Person {i}, notes: '{'y' * 200}'}}\n" for i in range(300))
    path = write(tmp_path / "watchlist.yaml", "people:\n" + base)
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    added = []
    for _ in range(4):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env)
        assert writer.stdout.readline().strip() == b"wrote"  # one edit done: the kill lands during later ones
        time.sleep(rng.uniform(0.0, 0.6))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        prev = path.with_name("watchlist.yaml.prev")
        for candidate in (path, prev) if prev.exists() else (path,):
            ids = [p.id for p in load_watchlist(candidate).people]
            new = [i for i in ids if i.startswith("new")]
            assert ids[:300] == [f"base{i}" for i in range(300)]
            assert new == [f"new{k}" for k in range(len(new))]
        added.append(len([p for p in load_watchlist(path).people if p.id.startswith("new")]))
        write(path, "people:\n" + base)  # start the next round from the base file
        prev.unlink(missing_ok=True)
    assert min(added) > 0  # a leftover .tmp file is harmless: it is never read


# ---- hot reload ------------------------------------------------------------------------------------------------
def person(pid: str, value: float, name: str | None = None) -> Person:
    vector = np.array([value, 1.0, 0.0], np.float32)
    vector /= np.linalg.norm(vector)
    return Person(pid, name or pid.upper(), ListKind.DENY, None, vector, vector[None, :])


class FakeTarget:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], set[str]]] = []

    def set_people(self, people, changed) -> None:
        self.calls.append(([p.id for p in people], changed))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_changed_people():
    before = {"a": person("a", 0.1), "b": person("b", 0.2), "c": person("c", 0.3)}
    after = [person("a", 0.1), person("b", 0.25), person("d", 0.4), person("c", 0.3, name="Renamed")]
    assert changed_people(before, after) == {"b", "c", "d"}


def test_reload_on_change_keeps_the_last_good_watchlist_on_a_bad_edit(tmp_path):
    path = write(tmp_path / "w.yaml", "people:\n  - {id: a, name: A}\n")
    results = {"a": [person("a", 0.1)], "ab": [person("a", 0.1), person("b", 0.2)]}

    def enroll(p: Path) -> EnrollmentResult:
        ids = "".join(entry.id for entry in load_watchlist(p).people)
        return EnrollmentResult(results[ids], [PhotoProblem("b", p.parent / "x.jpg", "no face found")], 0, 0)

    hub, clock, target = LiveHub(), Clock(), FakeTarget()
    reloader = WatchlistReloader(
        path, enroll, lambda image: PhotoVerdict("ok", "ok", 1), hub, enroll(path), interval_s=1.0, clock=clock
    )
    assert not reloader.step(target)  # nothing changed
    write(path, "people:\n  - {id: a, name: A}\n  - {id: b, name: B}\n")
    assert not reloader.step(target)  # not due yet
    clock.now = 1.5
    assert reloader.step(target) and target.calls[-1] == (["a", "b"], {"b"})
    assert hub.watchlist.people == 2 and hub.watchlist.photo_results["b"] == {str(tmp_path / "x.jpg"): "no face found"}
    write(path, "people:\n  - {id: a, name: A\n")  # a bad hand edit
    hub.reload_requested.set()  # the server asks for an immediate look
    assert not reloader.step(target)
    assert "w.yaml" in hub.watchlist.error and hub.watchlist.people == 2 and len(target.calls) == 1
    write(path, "people:\n  - {id: a, name: A}\n")
    clock.now = 3.0
    assert reloader.step(target) and target.calls[-1] == (["a"], {"b"}) and hub.watchlist.error == ""


def test_photo_checks_are_answered_between_batches(tmp_path):
    path = write(tmp_path / "w.yaml", "people: []\n")
    hub = LiveHub()
    verdicts = iter([PhotoVerdict("no_face", "no face found"), PhotoVerdict("ok", "ok", 1)])
    reloader = WatchlistReloader(
        path,
        lambda p: EnrollmentResult([], [], 0, 0),
        lambda image: next(verdicts),
        hub,
        EnrollmentResult([], [], 0, 0),
    )
    first, second = hub.photo_checks.submit(np.zeros((4, 4, 3), np.uint8)), hub.photo_checks.submit(np.zeros((4, 4, 3)))
    reloader.step(FakeTarget())
    assert first.result(timeout=1).code == "no_face" and second.result(timeout=1).ok


def test_photo_check_queue_is_bounded():
    hub = LiveHub()
    futures = [hub.photo_checks.submit(np.zeros((2, 2, 3), np.uint8)) for _ in range(10)]
    assert futures.count(None) == 2 and hub.photo_checks.refused == 2


def test_sigkill_of_the_server_during_api_edits_leaves_the_old_or_the_new_file(tmp_path):
    """The same through HTTP: a client adds people through the API of a server process that is killed with SIGKILL
    mid-stream; the file always loads and holds exactly the acknowledged additions (plus at most the one in flight)."""
    import httpx

    from vigil.bench.api import start_child
    from vigil.store.db import Database
    from vigil.store.users import Role, TokenStore

    base = "".join(f"  - {{id: base{i}, name: Base Person {i}, notes: '{'y' * 200}'}}\n" for i in range(300))
    path = write(tmp_path / "watchlist.yaml", "people:\n" + base)
    db = Database.in_data_dir(tmp_path / "data")
    _, token = TokenStore(db).create(Role.ADMIN, "test", "test")
    db.close()
    rng, acknowledged = random.Random(11), 0
    for round_ in range(3):
        child, port = start_child(
            [
                sys.executable,
                "-m",
                "vigil.bench.api",
                "--serve-store",
                str(tmp_path / "data"),
                "--watchlist",
                str(path),
            ],
            tmp_path / f"server{round_}.log",
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
        killer = threading.Timer(rng.uniform(1.0, 2.5), child.send_signal, (signal.SIGKILL,))
        killer.start()  # lands while a request is being served (the client sends them back to back)
        try:
            while True:
                try:
                    answer = client.post("/api/v1/people", json={"id": f"new{acknowledged}", "name": "N"}, timeout=10)
                except httpx.HTTPError:
                    break  # the server died
                assert answer.status_code == 201, answer.text
                acknowledged += 1
        finally:
            killer.join()
            child.wait(timeout=10)
            client.close()
        ids = [p.id for p in load_watchlist(path).people]
        new = [i for i in ids if i.startswith("new")]
        assert ids[:300] == [f"base{i}" for i in range(300)]
        assert new == [f"new{k}" for k in range(len(new))] and acknowledged <= len(new) <= acknowledged + 1
        acknowledged = len(new)
