"""Who may approve versions and change a session's settings, by user or by platform role."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AccessPolicy:
    """Who may do what. `None` means anyone."""

    approvers: frozenset[str] | None = None
    approver_roles: frozenset[str] | None = None  # platform roles (ids or names) that may approve
    settings_changers: frozenset[str] | None = None
    settings_roles: frozenset[str] | None = None  # platform roles that may change settings

    def may_approve(self, user: str, roles: frozenset[str] = frozenset()) -> bool:
        return _listed(user, roles, self.approvers, self.approver_roles)

    def may_change_settings(self, user: str, roles: frozenset[str] = frozenset()) -> bool:
        return _listed(user, roles, self.settings_changers, self.settings_roles)


def _listed(user: str, roles: frozenset[str], users: frozenset[str] | None,
            allowed_roles: frozenset[str] | None) -> bool:
    """Anyone when neither list is set; else a listed user or a holder of a listed role."""
    if users is None and allowed_roles is None:
        return True
    return bool((users and user in users) or (allowed_roles and roles & allowed_roles))
