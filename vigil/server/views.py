"""How stored records are shown to a caller: what each role may see of an event or a person."""

from __future__ import annotations

from vigil.live import WatchlistState
from vigil.server.auth import Principal
from vigil.server.roles import Permission
from vigil.store.events import EventRow, StoredEvent
from vigil.store.watchlist import photo_id
from vigil.watchlist import PersonEntry, Watchlist

API = "/api/v1"


def may_see_snapshot(principal: Principal, event_type: str) -> bool:
    """Alerts (a watchlist person) need SNAPSHOT_WATCHLIST; faces that matched nobody need SNAPSHOT_ANY."""
    needed = Permission.SNAPSHOT_WATCHLIST if event_type == "alert" else Permission.SNAPSHOT_ANY
    return principal.can(needed)


def event_json(
    record: dict, principal: Principal, first_photos: dict[str, str], stored: StoredEvent | None = None
) -> dict:
    """The event as the API shows it: no file paths; snapshot and person photo as URLs when the caller may see them."""
    out = {key: value for key, value in record.items() if key != "snapshot"}
    out["has_snapshot"] = bool(record.get("snapshot"))
    out["snapshot_url"] = (
        f"{API}/events/{record['id']}/snapshot.jpg"
        if record.get("snapshot") and may_see_snapshot(principal, record["type"])
        else None
    )
    person_id = record.get("person_id")
    photo = first_photos.get(person_id) if person_id and principal.can(Permission.PHOTOS_READ) else None
    out["person_photo_url"] = f"{API}/people/{person_id}/photos/{photo}" if photo else None
    if stored is not None:
        out["acknowledged"] = stored.acknowledged.to_json() if stored.acknowledged else None
        out["false_match"] = stored.false_match.to_json() if stored.false_match else None
    return out


def event_row_json(row: EventRow, principal: Principal, first_photos: dict[str, str]) -> str:
    """:func:`event_json` for a listed row, as JSON text: the stored text plus the caller's fields, never parsed."""
    snapshot = row.has_snapshot and may_see_snapshot(principal, row.type)
    photo = first_photos.get(row.person_id) if row.person_id and principal.can(Permission.PHOTOS_READ) else None
    # the URLs hold only validated ids (hex event ids, [a-z0-9_-] person ids, hex photo ids): nothing to escape
    snapshot_url = f'"{API}/events/{row.id}/snapshot.jpg"' if snapshot else "null"
    photo_url = f'"{API}/people/{row.person_id}/photos/{photo}"' if photo else "null"
    return (
        f'{row.public_json[:-1]},"has_snapshot":{"true" if row.has_snapshot else "false"},'
        f'"snapshot_url":{snapshot_url},"person_photo_url":{photo_url},'
        f'"acknowledged":{row.acknowledged_json},"false_match":{row.false_match_json}}}'
    )


def current_watchlist(editor) -> Watchlist | None:
    """The watchlist file as it is, or None when none is configured or it does not load (a bad hand edit must not
    break event lists: they only lose their photo links)."""
    if editor is None:
        return None
    try:
        return editor.read()
    except Exception:
        return None


def first_photo_ids(watchlist: Watchlist | None) -> dict[str, str]:
    if watchlist is None:
        return {}
    return {person.id: photo_id(person.photos[0]) for person in watchlist.people if person.photos}


def photo_result(person: PersonEntry, path: str, state: WatchlistState) -> str:
    """``ok``, the enroller's reason, or ``pending`` (not looked at by the running pipeline yet)."""
    problem = state.photo_results.get(person.id, {}).get(path)
    if problem:
        return problem
    return "ok" if person.id in state.enrolled and person.id in state.photo_results else "pending"


def person_json(person: PersonEntry, watchlist: Watchlist, state: WatchlistState, principal: Principal) -> dict:
    out: dict[str, object] = {
        "id": person.id,
        "name": person.name,
        "list": person.list.value,
        "threshold": person.threshold,
        "notes": person.notes,
        "enrolled": person.id in state.enrolled,
        "photo_count": len(person.photos),
    }
    if principal.can(Permission.PHOTOS_READ):
        out["photos"] = [
            {
                "id": photo_id(photo),
                "url": f"{API}/people/{person.id}/photos/{photo_id(photo)}",
                "result": photo_result(person, str(watchlist.photo_path(photo)), state),
            }
            for photo in person.photos
        ]
    return out
