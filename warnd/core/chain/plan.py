"""Planning the 631 stages: which warning dispatches, when each stage fires, whom it calls.

Pure functions over a parsed alert, the directory, the policy and the arrival time
(contracts §3, "Stages"). Nothing here reads a clock or touches storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from warnd.core import deadline
from warnd.core.cap import SEVERITY_RANK, Alert
from warnd.core.division import Level

if TYPE_CHECKING:
    from warnd.config.policy import Policy, StagePolicy
    from warnd.core.directory import Directory


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a warning dispatches at all, and why not."""

    dispatch: bool
    #: expired | below_threshold | not_a_warning | cancel | no_area | no_division
    code: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedStage:
    level: Level
    lead: timedelta
    due: datetime  # when it fires: T - lead, or the arrival when that has passed
    late: bool  # T - lead had passed on arrival: fires at once
    divisions: tuple[str, ...]
    recipients: tuple[str, ...]  # contact ids of the A persons of those divisions


@dataclass(frozen=True, slots=True)
class Plan:
    decision: Decision
    reference: datetime  # T: onset, else effective, else sent
    reference_kind: str  # "onset" | "effective" | "sent"
    stages: tuple[PlannedStage, ...]
    unmatched: tuple[str, ...]  # area codes that match no division of the directory

    @property
    def dispatch(self) -> bool:
        return self.decision.dispatch


def reference_time(alert: Alert) -> tuple[datetime, str]:
    """T for the 631 timetable: onset, else effective, else sent (``warnd.core.deadline``)."""
    return deadline.reference_time(alert.onset, alert.effective, alert.sent)


def severity_rank(severity: str | None) -> int:
    return SEVERITY_RANK.get(severity or "Unknown", 0)


def decide(alert: Alert, policy: Policy, arrival: datetime) -> Decision:
    """The dispatch gate: a message that passes it starts (or changes) a chain."""
    if alert.msg_type == "Cancel":
        return Decision(False, "cancel", "Cancel message (解除): lifts a warning, starts nothing")
    if alert.msg_type not in ("Alert", "Update"):
        return Decision(
            False, "not_a_warning", f"msgType {alert.msg_type} is not a warning (非预警消息)"
        )
    if alert.status not in ("Actual", "Exercise", "Test"):
        return Decision(False, "not_a_warning", f"status {alert.status} is not dispatched (不调度)")
    if not alert.infos:
        return Decision(False, "not_a_warning", "no info block: nothing to warn about (无预警内容)")
    expires = alert.expires
    if expires is not None and expires <= arrival:
        return Decision(
            False,
            "expired",
            f"expired on arrival (到达时已过期): expires {expires.isoformat()}"
            f" <= arrival {arrival.isoformat()}",
        )
    if severity_rank(alert.severity) < severity_rank(policy.min_severity):
        return Decision(
            False,
            "below_threshold",
            f"below min_severity (低于触发级别): {alert.severity} < {policy.min_severity}",
        )
    if not alert.geocodes:
        codes = ", ".join(alert.unmatched_geocodes) or "none"
        return Decision(
            False, "no_area", f"no division code in the area (预警区域无行政区划代码): {codes}"
        )
    return Decision(True)


def stage_due(reference: datetime, lead: timedelta, arrival: datetime) -> tuple[datetime, bool]:
    """When a stage fires: T - lead, or at arrival when that time has already passed."""
    due = reference - lead
    if due <= arrival:
        return arrival.astimezone(reference.tzinfo), due < arrival
    return due, False


def targets(
    area: Sequence[str], level: Level, directory: Directory
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Divisions of ``level`` overlapping the area, and their A persons' contact ids."""
    divisions = directory.overlapping(area, level)
    codes = tuple(d.code for d in divisions)
    recipients = tuple(c.contact_id for d in divisions for c in directory.persons(d.code, "A"))
    return codes, recipients


def plan_stage(
    stage: StagePolicy,
    area: Sequence[str],
    reference: datetime,
    arrival: datetime,
    directory: Directory,
) -> PlannedStage:
    due, late = stage_due(reference, stage.lead, arrival)
    codes, recipients = targets(area, stage.level, directory)
    return PlannedStage(stage.level, stage.lead, due, late, codes, recipients)


def plan(alert: Alert, directory: Directory, policy: Policy, arrival: datetime) -> Plan:
    """What the chain would do with ``alert`` arriving at ``arrival`` (contracts §4 ``plan``)."""
    reference, kind = reference_time(alert)
    area = alert.geocodes
    unmatched = tuple(directory.unmatched(area)) + alert.unmatched_geocodes
    decision = decide(alert, policy, arrival)
    if not decision.dispatch:
        return Plan(decision, reference, kind, (), unmatched)
    stages = tuple(plan_stage(s, area, reference, arrival, directory) for s in policy.stages)
    if not any(s.divisions for s in stages):
        decision = Decision(
            False,
            "no_division",
            "no division of the contacts directory lies in the area (区域内无通讯录中的行政区划): "
            + ", ".join(area),
        )
        return Plan(decision, reference, kind, (), unmatched)
    return Plan(decision, reference, kind, stages, unmatched)
