"""Who may do what: one table from role to permissions (least privilege: a role gets only what its job needs)."""

from __future__ import annotations

from enum import Enum

from vigil.store.users import Role


class Permission(str, Enum):
    EVENTS_READ = "events.read"  # event lists and details (metadata)
    STREAM = "stream"  # the Server-Sent Events stream
    SNAPSHOT_WATCHLIST = "snapshot.watchlist"  # snapshots of alerts (faces that matched a watchlist person)
    SNAPSHOT_ANY = "snapshot.any"  # also snapshots of unknown faces
    EVENTS_REVIEW = "events.review"  # acknowledge, mark a false match
    CAMERAS_READ = "cameras.read"  # status
    LIVE_VIEW = "live.view"  # latest frames (they show everyone in view)
    PEOPLE_READ = "people.read"  # names, lists, thresholds
    PHOTOS_READ = "photos.read"  # enrolled photos
    WATCHLIST_ENROLL = "watchlist.enroll"  # add a person, add a photo
    WATCHLIST_EDIT = "watchlist.edit"  # change or delete a person, remove a photo
    AUDIT_READ = "audit.read"
    USERS_MANAGE = "users.manage"  # users and API tokens
    SYSTEM_READ = "system.read"  # settings, models, sinks
    METRICS_READ = "metrics.read"


_VIEWER = frozenset(
    {
        Permission.EVENTS_READ,
        Permission.STREAM,
        Permission.SNAPSHOT_WATCHLIST,
        Permission.CAMERAS_READ,
        Permission.PEOPLE_READ,
        Permission.METRICS_READ,
    }
)
_OPERATOR = _VIEWER | {Permission.SNAPSHOT_ANY, Permission.EVENTS_REVIEW, Permission.LIVE_VIEW, Permission.PHOTOS_READ}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.ADMIN: frozenset(Permission),
}


def permissions_of(role: Role, operators_can_enroll: bool = False) -> frozenset[Permission]:
    granted = ROLE_PERMISSIONS[role]
    if role is Role.OPERATOR and operators_can_enroll:
        granted = granted | {Permission.WATCHLIST_ENROLL}
    return granted
