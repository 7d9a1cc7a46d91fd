"""The audit's outputs: JSON (and back, for re-reading a saved report) and a terminal summary."""

from __future__ import annotations

import dataclasses
import json
import types
import typing

from audit.replay import AuditReport, PairAudit


def to_json(result: AuditReport | PairAudit) -> str:
    return json.dumps(dataclasses.asdict(result), indent=2)


def from_json(text: str, cls: type[AuditReport] | type[PairAudit] = AuditReport) -> AuditReport | PairAudit:
    """Rebuild a report from :func:`to_json` output (equal to the original)."""
    return _build(cls, json.loads(text))


def _build(tp, value):
    """Rebuild a value of type ``tp`` (dataclasses, tuples, optionals, dicts) from JSON data."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(
            **{
                f.name: _build(hints[f.name], value[f.name])
                for f in dataclasses.fields(tp)
                if f.name in value
            }
        )
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _build(next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        return tuple(_build(args[0], v) for v in value)
    if origin is dict:
        return {k: _build(args[1], v) for k, v in value.items()}
    return value


def format_summary(result: AuditReport | PairAudit) -> str:
    """A few readable lines for the terminal."""
    if isinstance(result, PairAudit):
        o, s = result.original, result.sent
        return "\n".join(
            [
                f"original: the service would infer {o.inferred_label!r} from {len(o.basis)} items ({o.inferred_from})",
                f"sent:     the service infers {s.inferred_label!r} from {len(s.basis)} items ({s.inferred_from})",
                f"codes differ in {result.hamming} bits; PSNR {result.psnr_db:.2f} dB; L_inf {result.linf_255:.1f}/255; "
                f"{result.shared_within_radius} results shared within radius {s.radius}",
                "verdict: "
                + (
                    "the sent image hides the original's label"
                    if result.hides_label
                    else "the sent image reveals the same label as the original"
                ),
            ]
        )
    s = result.summary
    lines = [
        f"{s.queries} logged queries ({s.with_upload} with an image, {s.labelled} with known labels, "
        f"{s.code_mismatches} whose upload re-encodes to another code)"
    ]
    if s.labelled:
        lines.append(
            f"mean leakage {s.mean_leakage:.0%}; the inferred label is a true label for "
            f"{s.inferred_true_share:.0%} of them"
        )
    for e in result.entries:
        v = e.view
        truth = "?" if e.true_labels is None else "|".join(e.true_labels) or "-"
        leak = "" if e.leakage is None else f" leakage {e.leakage:.0%}"
        lines.append(
            f"#{e.log_id} {e.upload_type:<5} inferred {v.inferred_label!r} from {len(v.basis)} "
            f"items ({v.inferred_from}, r={v.radius}); true {truth};{leak} -> {e.verdict}"
        )
    return "\n".join(lines)
