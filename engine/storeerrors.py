"""The state store's errors (engine.store re-exports them)."""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base of the store's errors."""


class StoreCorrupt(StoreError):
    """A state file does not load or validate; it has been left untouched."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}; the file was left untouched")

    @classmethod
    def changed_behind(cls, path: Path) -> StoreCorrupt:
        return cls(path, "was changed by another program while scalpdesk held the state directory; "
                         "stop scalpdesk and check it (scalpdesk state check)")


class StoreLocked(StoreError):
    """Another process holds the state directory."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = Path(state_dir)
        self.pid = pid
        super().__init__(
            f"state directory {state_dir} is in use by another scalpdesk "
            f"(pid {pid if pid is not None else 'unknown'}); stop it first or use another --state-dir"
        )
