"""No module outside plantpheno/records/ reads a field of the model metadata or of an evaluation by string key.

The two records (:class:`~plantpheno.records.model_meta.ModelMeta`, :class:`~plantpheno.records.evaluation.Evaluation`
and its parts) are read by attribute, so a renamed field fails where the record is parsed, not at run time far
away. The scan looks at every ``x["key"]`` read and every ``x.get("key", ...)`` in the package where

- ``key`` is a field of one of the records (taken from the record classes themselves, so it follows a rename), and
- ``x`` holds one of the records: a name or attribute spelled as they are (``meta``, ``package.meta``, ``metrics``,
  ``evaluation``, ``verdict``, ``baseline``, ``calibration``, ``ci`` ...), a checkpoint's ``["meta"]``, a read the
  scan already flagged (``(metrics.get("baseline") or {}).get("verdict")``), or a name assigned from any of those
  in the same module (``m = package.meta`` then ``m["task"]``);

and every read of ``"meta"`` (a checkpoint's metadata, whatever the payload is called).

Exempt: the records' home, and the modules that compute the figures an evaluation is built from
(``PRODUCERS``: they return plain values that :func:`~plantpheno.records.evaluation.build_evaluation` then checks).
The last tests plant violations and show that the scan finds each, so it cannot pass by finding nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import plantpheno
from plantpheno.records import evaluation as ev_records
from plantpheno.records import model_meta as meta_records

PACKAGE = Path(plantpheno.__file__).parent
HOME = PACKAGE / "records"
PRODUCERS = {"evaluation/metrics.py", "evaluation/baselines.py", "evaluation/calibration.py"}
RECORDS = (meta_records.ModelMeta, ev_records.Evaluation, ev_records.Interval, ev_records.Verdict,
           ev_records.Baseline, ev_records.Calibration, ev_records.CalibrationScores,
           ev_records.TestTimeAugmentation, ev_records.PerClass, ev_records.BaselineSummary)
KEYS = {field.alias or name for record in RECORDS for name, field in record.model_fields.items()} | {"meta"}
# How the code names a record or one of its parts (the last identifier of a name or attribute chain).
RECORD_NAMES = {"meta", "metadata", "metrics", "evaluation", "ev", "verdict", "baseline", "base", "calibration",
                "cal", "ci", "confidence_interval", "interval", "tta", "theirs", "baseline_verdict"}
CHECKPOINT_META = "meta"  # a checkpoint's metadata: read by any name only through ModelMeta.from_checkpoint


def _key(node: ast.AST) -> tuple[str, ast.expr] | None:
    """``(key, receiver)`` of a string-keyed read: ``x["key"]`` (loaded) or ``x.get("key", ...)``."""
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and isinstance(node.slice, ast.Constant) \
            and isinstance(node.slice.value, str):
        return node.slice.value, node.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value, node.func.value
    return None


def _holds_record(node: ast.expr, aliases: set[str]) -> bool:
    """Whether ``node`` is (by its spelling) one of the records, a part of one, or an alias of those."""
    if isinstance(node, ast.BoolOp):  # ``x or {}``
        return any(_holds_record(value, aliases) for value in node.values)
    if isinstance(node, ast.Name):
        return node.id in RECORD_NAMES or node.id in aliases
    if isinstance(node, ast.Attribute):
        return node.attr in RECORD_NAMES
    found = _key(node)
    return found is not None and (found[0] == CHECKPOINT_META or found[0] in KEYS and _holds_record(found[1], aliases))


def _aliases(tree: ast.AST) -> set[str]:
    """Names assigned from a record (``m = package.meta``, ``base = metrics.get("baseline") or {}``), to a fixpoint."""
    aliases: set[str] = set()
    while True:
        more = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and _holds_record(node.value, aliases) for target in node.targets if isinstance(target, ast.Name)}
        if more <= aliases:
            return aliases
        aliases |= more


def violations(source: str, where: str = "<source>") -> list[str]:
    """Every string-keyed read of a record field in ``source``, as ``where:line: expression``."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        read = _key(node)
        if read and (read[0] == CHECKPOINT_META or read[0] in KEYS and _holds_record(read[1], aliases)):
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return sorted(set(found))


def test_no_module_outside_the_records_home_reads_a_record_field_by_string():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if path.is_relative_to(HOME) or relative in PRODUCERS:
            continue
        found += violations(path.read_text(encoding="utf-8"), relative)
    assert not found, ("read the field by attribute of the record (plantpheno/records/: ModelMeta, Evaluation), "
                       "not by string key:\n" + "\n".join(found))


def test_the_scan_knows_the_fields_of_both_records():
    assert {"class_names", "image_size", "temperature", "tta", "bands", "meta_version", "baseline_verdict"} <= KEYS
    assert {"confidence_interval", "baseline", "verdict", "calibration", "per_class", "headline_metric"} <= KEYS


PLANTED = '''
def card(package, checkpoint, metrics, run):
    names = package.meta.get("class_names")
    size = int(checkpoint["meta"]["image_size"])
    verdict = (metrics.get("baseline") or {}).get("verdict") or {}
    m = package.meta
    task = m["task"]
    base = metrics.get("baseline") or {}
    word = base["verdict"]["verdict"]
    low = metrics["confidence_interval"]["low"]
    fine = run.tags["task"], {"a": 1}.get("verdict"), row["class_names"]
'''


def test_the_scan_finds_every_planted_violation_and_nothing_else():
    found = violations(PLANTED)
    lines = {int(entry.split(":")[1]) for entry in found}
    assert lines == {3, 4, 5, 7, 8, 9, 10}, found  # 11: other mappings, or no record
    assert "<source>:4: checkpoint['meta']['image_size']" in found  # ast.unparse writes single quotes
    assert "<source>:9: base['verdict']['verdict']" in found


def test_the_scan_would_have_found_the_reads_this_change_replaced():
    """Lines as they were before the records (tracking, registry, pipeline, cli)."""
    before = '''
m = package.meta
verdict = (metrics.get("baseline") or {}).get("verdict") or {}
tta = str(m.get("tta") or "none")
num_outputs = int(checkpoint["meta"]["num_outputs"])
ci = meta.get("confidence_interval") or {}
text = f"{ci['low']:.4f}"
'''
    assert len({entry.split(":")[1] for entry in violations(before)}) == 5
