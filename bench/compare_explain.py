"""What ``bench compare`` says beside the verdict: run labels, input checks, the spec fields in which an unmatched
run differs from its closest counterpart, and both sides' provenance."""
from __future__ import annotations

import json
import math

# top-level record keys and keys of the record's ``provenance`` dict shown side by side
PROVENANCE_KEYS = ("git", "dirty", "code", "torch", "device")
HOST_KEYS = ("numpy", "python", "package", "host", "cpu", "gpu", "threads")
_NUMERIC = ("round", "nfe", "vjp", "reward_calls", "wall_s", "reward_mean", "reward_se", "off_support_mean",
            "off_support_se")


def check_records(records: list, where: str) -> None:
    """Raise ValueError (one line naming ``where`` and the record) for input compare cannot read."""
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise ValueError(f"{where}: record {i} is a {type(r).__name__}, not a JSON object")
        if not isinstance(r.get("run_id"), str) or not r["run_id"]:
            raise ValueError(f"{where}: record {i} has no run_id")
        if not isinstance(r.get("status"), str):
            raise ValueError(f"{where}: record {i} (run {r['run_id']}) has no status")
        for k in _NUMERIC:
            v = r.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"{where}: record {i} (run {r['run_id']}): {k} is {v!r}, not a number")
        if r.get("round") is not None and int(r["round"]) != r["round"]:
            raise ValueError(f"{where}: record {i} (run {r['run_id']}): round is {r['round']!r}, not an integer")
        for k in ("spec", "hparams", "provenance"):
            if r.get(k) is not None and not isinstance(r[k], dict):
                raise ValueError(f"{where}: record {i} (run {r['run_id']}): {k} is not an object")
        for k in ("reward_per_sample", "off_support_per_sample"):
            if r.get(k) is not None and not isinstance(r[k], list):
                raise ValueError(f"{where}: record {i} (run {r['run_id']}): {k} is not a list")


def label(r: dict, seed: bool = True) -> str:
    """task/reward/denoiser method k=v ... seed=s"""
    given = (r.get("spec") or {}).get("params") if r.get("spec") else r.get("hparams")  # as the user gave them
    params = " ".join(f"{k}={v}" for k, v in sorted((given or {}).items()))
    parts = (f"{r.get('task')}/{r.get('reward_fn')}/{r.get('denoiser')}", str(r.get("method")), params,
             f"seed={r.get('seed')}" if seed else "")
    return " ".join(x for x in parts if x)


def spec_fields(r: dict) -> dict:
    """The fields that make a run id: spec fields, resolved hyperparameters as ``params.K``, versions."""
    s = dict(r.get("spec") or {})
    raw = s.pop("params", None) or {}
    if not s:  # records without a spec: the identifying top-level keys
        s = {"task": r.get("task"), "reward": r.get("reward_fn"), "denoiser": r.get("denoiser"),
             "method": r.get("method"), "seed": r.get("seed"), "batch": r.get("n")}
    out = dict(s)
    out.update({f"params.{k}": v for k, v in (r.get("hparams") or raw).items()})
    for k in ("method_version", "task_version", "network_seed"):
        if r.get(k) is not None:
            out[k] = r[k]
    return out


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return a == b


def _diff(a: dict, b: dict) -> dict:
    return {k: [b.get(k), a.get(k)] for k in sorted(set(a) | set(b)) if not _same(a.get(k), b.get(k))}


def spec_diff(this: dict, other: dict) -> dict:
    """field -> [other's value, this value] for every field in which two runs' specs differ."""
    return _diff(spec_fields(this), spec_fields(other))


def _items(fields: dict) -> frozenset:
    return frozenset((k, json.dumps(v, sort_keys=True, default=str)) for k, v in fields.items())


def explain_unmatched(finals: dict[str, dict], rids: list[str], others: dict[str, dict]) -> list[dict]:
    """One entry per unmatched run: its label, the run among ``others`` whose spec differs in the fewest fields
    (``closest``; searched among runs of the same task, method and seed first) and those fields (``differs``:
    field -> [other side's value, this run's value])."""
    fields = {rid: spec_fields(o) for rid, o in others.items()}
    items = {rid: _items(f) for rid, f in fields.items()}
    by_key: dict[tuple, list[str]] = {}
    for rid, o in others.items():
        by_key.setdefault((o.get("task"), o.get("method"), o.get("seed")), []).append(rid)
    out = []
    for rid in rids:
        r = finals[rid]
        mine = spec_fields(r)
        pool = by_key.get((r.get("task"), r.get("method"), r.get("seed"))) or list(others)
        its = _items(mine)
        near = min(pool, key=lambda o: len(its ^ items[o]), default=None)
        out.append({"run_id": rid, "label": label(r), "closest": near,
                    "closest_label": label(others[near]) if near else None,
                    "differs": _diff(mine, fields[near]) if near else {}})
    return out


def describe_unmatched(e: dict, other_side: str) -> str:
    """``label: closest OTHER run <id> differs in k: a -> b, ...`` for the text output."""
    if e["closest"] is None:
        return f"{e['label']} [{e['run_id']}]: no {other_side} run to compare with"
    if not e["differs"]:
        return (f"{e['label']} [{e['run_id']}]: {other_side} run {e['closest']} has the same spec fields "
                "(the run id changed: different id hashing or an unrecorded field)")
    diffs = ", ".join(f"{k}: {_short(o)} -> {_short(t)}" for k, (o, t) in e["differs"].items())
    return f"{e['label']} [{e['run_id']}]: closest {other_side} run {e['closest']} differs in {diffs}"


def _short(v) -> str:
    s = "None" if v is None else str(v)
    return s if len(s) <= 40 else s[:37] + "..."


def provenance_values(finals: dict[str, dict]) -> dict[str, list]:
    """key -> sorted distinct values over a record set's final rows (records without the key are left out)."""
    vals: dict[str, set] = {}
    for r in finals.values():
        host = r.get("provenance") or {}
        for k in PROVENANCE_KEYS:
            if k in r:
                vals.setdefault(k, set()).add(_short(r[k]))
        for k in HOST_KEYS:
            if k in host:
                vals.setdefault(k, set()).add(_short(host[k]))
    return {k: sorted(v) for k, v in vals.items()}


def provenance_report(fb: dict[str, dict], fn: dict[str, dict]) -> dict:
    """{"base": {key: values}, "new": {key: values}, "differs": [keys whose value sets differ]}; a key recorded on
    one side only differs as well (old records have no ``code``)."""
    b, n = provenance_values(fb), provenance_values(fn)
    keys = [k for k in PROVENANCE_KEYS + HOST_KEYS if k in b or k in n]
    return {"base": b, "new": n, "differs": [k for k in keys if b.get(k) != n.get(k)]}


def provenance_rows(prov: dict) -> list[list]:
    """Rows [key, base, new, ""|"differs"] for the text table."""
    keys = [k for k in PROVENANCE_KEYS + HOST_KEYS if k in prov["base"] or k in prov["new"]]

    def show(v):
        return "-" if v is None else ", ".join(v)
    return [[k, show(prov["base"].get(k)), show(prov["new"].get(k)), "differs" if k in prov["differs"] else ""]
            for k in keys]
