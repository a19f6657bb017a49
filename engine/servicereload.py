"""What a reload changes, in words an operator reads in the config history, and what it must rebuild.

``Engine.reload`` (engine.service) stops and rebuilds the channels ``channel_changes`` names and
restarts the listeners whose settings changed; engine settings other than the encryption keys wait
for the next start (``engine_changes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import Config, EngineSettings

__all__ = ["ReloadReport", "channel_changes", "engine_changes"]


@dataclass
class ReloadReport:
    """What a reload changed, in words an operator reads in the config history."""

    changes: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = self.changes or ["no change"]
        return "; ".join(lines + [f"needs a restart: {r}" for r in self.restart_needed])


def engine_changes(old: Config, new: Config, report: ReloadReport) -> None:
    """Note in ``report`` that changed engine settings (but the encryption keys) wait for a restart."""
    if _without_keys(new.engine) != _without_keys(old.engine):
        report.restart_needed.append(
            "engine settings (store, identity, charset) are applied at the next start"
        )


def channel_changes(old: Config, new: Config, report: ReloadReport) -> set[str]:
    """The names of the channels to stop and rebuild (changed, added or removed), each noted in ``report``.

    A channel changed when its item did, or a table or module it uses did (spec or file content).
    """
    old_channels = {c.name: c for c in old.channels}
    new_channels = {c.name: c for c in new.channels}
    changed_channels = {
        n
        for n in new_channels
        if n not in old_channels
        or old_channels[n] != new_channels[n]
        or old.inputs_of(old_channels[n]) != new.inputs_of(new_channels[n])
    } | (set(old_channels) - set(new_channels))
    old_inputs = {str(source): source.sha256 for source in old.inputs}
    for source in new.inputs:
        if old_inputs.get(str(source), source.sha256) != source.sha256:
            report.changes.append(f"{source} changed")
    for name in sorted(set(old_channels) - set(new_channels)):
        report.changes.append(f"channel {name} removed")
    for name in sorted(set(new_channels) - set(old_channels)):
        report.changes.append(f"channel {name} added")
    for name in sorted(changed_channels & set(old_channels) & set(new_channels)):
        report.changes.append(f"channel {name} changed")
    return changed_channels


def _without_keys(settings: EngineSettings) -> EngineSettings:
    """Engine settings without the encryption keys, which a reload applies (Cipher.rotate)."""
    return settings.model_copy(update={"store": settings.store.model_copy(update={"encryption": None})})
