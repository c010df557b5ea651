"""Campaigns: a spec (TOML), a deterministic plan, a run that stores attempts as it goes, resume.

A campaign file:

    name = "smoke"
    seed = 7
    samples = 10                       # items drawn per probe (0: all)

    [target]                           # a TargetSpec (targets.py)
    type = "chat"
    options = { backend = "echo" }

    [[probes]]
    name = "harmbench"
    samples = 20                       # overrides the campaign's default
    [[probes]]
    name = "dan"
    options = { payload_count = 5 }

    [[converters]]                     # each applies to every harmful item, beside the plain text
    name = "base64"

    [[scorers]]
    name = "refusal"

    [engine]
    name = "thread"
    options = { workers = 4 }

The plan is deterministic: for each probe, a seeded sample of its items; each item crossed with
`identity` and every converter (benign probes get `identity` only). XSTest's safe prompts join every
campaign that has harmful probes (`over_refusal_probe`), so over-refusal is measured beside ASR. Every
planned attempt has a key, sha256(probe | converter | item id); the database keeps (run, key) unique. A
run that stops (crash, kill, Ctrl-C) resumes with `bastion redteam resume RUN_ID`: it re-plans from the
stored spec and runs the keys that are not stored yet, so no attempt is lost or repeated.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bastion.core.errors import BastionError, ConfigError, NotFound
from bastion.core.records import Attempt, Message
from bastion.core.settings import Settings
from bastion.db.session import Database
from bastion.db.tables import RedteamAttemptRow, RedteamRunRow
from bastion.redteam.converters import Converter, converters
from bastion.redteam.engines import Engine, engines
from bastion.redteam.probes.base import AttackContext, Probe, ProbeItem, probes
from bastion.redteam.scorers import Scorer, scorers
from bastion.redteam.scorers.verdict import verdict
from bastion.redteam.targets import ManagedTarget, TargetSpec, build_target


class Strict(BaseModel):
    """Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")


class PluginSpec(Strict):
    """A plugin by name with its options."""

    name: str = Field(description="Registered name.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options validated by the plugin.")


class ProbeSpec(PluginSpec):
    """A probe, its options, and how many of its items to draw."""

    samples: int | None = Field(None, ge=0, description="Items drawn (0: all); default the campaign's.")


class ConverterSpec(PluginSpec):
    """A converter, and the probes it applies to."""

    probes: list[str] | None = Field(
        None, description="Apply only to these probes (default: every harmful probe)."
    )


class EngineSpec(PluginSpec):
    """The engine that runs attempts."""

    name: str = Field("thread", description="'thread', 'process' or 'ray'.")


class CampaignSpec(Strict):
    """Everything that determines a campaign run; stored with the run, enough to replay it."""

    name: str = Field("campaign", description="A name for reports.")
    seed: int = Field(0, description="Seed of the item draw and of converters' randomness.")
    samples: int = Field(10, ge=0, description="Items drawn per probe by default (0: all).")
    target: TargetSpec
    probes: list[ProbeSpec] = Field(min_length=1)
    converters: list[ConverterSpec] = Field(default_factory=list)
    scorers: list[PluginSpec] = Field(default_factory=lambda: [PluginSpec(name="refusal")])
    over_refusal_probe: str | None = Field(
        "xstest", description="Benign probe run beside harmful ones (None: none)."
    )
    engine: EngineSpec = Field(default_factory=EngineSpec)

    def with_over_refusal(self) -> list[ProbeSpec]:
        """The probes, plus the over-refusal probe when harmful probes are present and it is missing."""
        listed = list(self.probes)
        missing = self.over_refusal_probe and all(p.name != self.over_refusal_probe for p in listed)
        if missing and any(probes.get(p.name).intent == "harmful" for p in listed):
            assert self.over_refusal_probe is not None
            listed.append(ProbeSpec(name=self.over_refusal_probe))
        return listed

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON spec."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def load_campaign(path: Path, overrides: dict[str, Any] | None = None) -> CampaignSpec:
    """Read and validate a campaign TOML file (`overrides` replace top-level keys)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"campaign file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"campaign file {path} is not valid TOML: {exc}") from exc
    data.update(overrides or {})
    return parse_campaign(data, str(path))


def parse_campaign(data: dict[str, Any], where: str = "campaign") -> CampaignSpec:
    """Validate a campaign from a dict; errors name the key."""
    try:
        return CampaignSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "campaign"
        raise ConfigError(f"{where}: invalid {loc!r}: {first['msg']}") from exc


@dataclass
class Unit:
    """One planned attempt."""

    seq: int
    key: str
    probe: str
    converter: str
    item: dict[str, Any]


def _validated(cls: Any, kind: str, name: str, options: dict[str, Any]) -> BaseModel:
    try:
        result: BaseModel = cls.Options.model_validate(options)
        return result
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid option {loc!r} for {kind} {name!r}: {first['msg']}") from exc


def build_probe(spec: PluginSpec, settings: Settings) -> Probe:
    """The probe a spec names, its options validated."""
    cls = probes.get(spec.name)
    return cls(_validated(cls, "probe", spec.name, spec.options), settings)


def build_converter(spec: PluginSpec, settings: Settings) -> Converter:
    """The converter a spec names, its options validated."""
    cls = converters.get(spec.name)
    return cls(_validated(cls, "converter", spec.name, spec.options), settings)


def build_scorer(spec: PluginSpec, settings: Settings) -> Scorer:
    """The scorer a spec names, its options validated."""
    cls = scorers.get(spec.name)
    return cls(_validated(cls, "scorer", spec.name, spec.options), settings)


def build_engine(spec: PluginSpec) -> Engine:
    """The engine a spec names, its options validated."""
    cls = engines.get(spec.name)
    return cls(_validated(cls, "engine", spec.name, spec.options))


def plan(spec: CampaignSpec, settings: Settings, data_hashes: dict[str, str] | None = None) -> list[Unit]:
    """Every attempt of the campaign, in a fixed order with fixed keys (the same for the same spec).

    `data_hashes`, when given, receives per probe the sha256 of every item it loaded (before sampling):
    the data a replay must find to give the same plan.
    """
    for converter_spec in spec.converters:
        converters.get(converter_spec.name)
    units: list[Unit] = []
    seen: set[str] = set()
    for probe_spec in spec.with_over_refusal():
        probe = build_probe(probe_spec, settings)
        items = probe.load()
        if data_hashes is not None:
            digest = hashlib.sha256()
            for entry in items:
                digest.update(f"{entry.id}\x1f{entry.text}\x1e".encode())
            data_hashes[probe_spec.name] = digest.hexdigest()
        n = spec.samples if probe_spec.samples is None else probe_spec.samples
        if n and n < len(items):
            rng = random.Random(f"{spec.seed}:{probe_spec.name}")
            chosen = sorted(rng.sample(range(len(items)), n))
            items = [items[i] for i in chosen]
        names = ["identity"]
        if probe.intent == "harmful":
            names += [
                c.name
                for c in spec.converters
                if c.name != "identity" and (c.probes is None or probe_spec.name in c.probes)
            ]
        for item in items:
            for converter in names:
                raw = f"{probe_spec.name}|{converter}|{item.id}"
                key = hashlib.sha256(raw.encode()).hexdigest()[:32]
                suffix = 1
                while key in seen:
                    suffix += 1
                    key = hashlib.sha256(f"{raw}#{suffix}".encode()).hexdigest()[:32]
                seen.add(key)
                units.append(Unit(len(units), key, probe_spec.name, converter, asdict(item)))
    return units


def check(spec: CampaignSpec, settings: Settings) -> None:
    """Fail early (ConfigError, PluginNotFound) on an unknown plugin or an invalid option."""
    for probe in spec.with_over_refusal():
        cls = probes.get(probe.name)
        _validated(cls, "probe", probe.name, probe.options)
    for converter in spec.converters:
        _validated(converters.get(converter.name), "converter", converter.name, converter.options)
        for name in converter.probes or []:
            probes.get(name)
    for scorer in spec.scorers:
        _validated(scorers.get(scorer.name), "scorer", scorer.name, scorer.options)
    _validated(engines.get(spec.engine.name), "engine", spec.engine.name, spec.engine.options)
    from bastion.redteam.targets import targets

    _validated(targets.get(spec.target.type), "target", spec.target.type, spec.target.options)


class Worker:
    """Builds a campaign's target, probes, converters and scorers once, and runs units with them."""

    def __init__(self, spec: CampaignSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.target: ManagedTarget = build_target(spec.target, settings)
        self.probes = {p.name: build_probe(p, settings) for p in spec.with_over_refusal()}
        converter_specs = [PluginSpec(name="identity"), *spec.converters]
        self.converters = {c.name: build_converter(c, settings) for c in converter_specs}
        self.scorers = {s.name: build_scorer(s, settings) for s in spec.scorers}

    def describe(self) -> dict[str, Any]:
        """The exact specs of every plugin (for the summary's replay section)."""
        return {
            "target": self.target.describe(),
            "probes": {n: p.describe() for n, p in self.probes.items()},
            "converters": {n: c.describe() for n, c in self.converters.items()},
            "scorers": {n: s.describe() for n, s in self.scorers.items()},
        }

    def run(self, unit: Unit) -> dict[str, Any]:
        """Attack, detect, score, decide: one attempt as a row's worth of data."""
        item = ProbeItem(**unit.item)
        probe = self.probes[unit.probe]
        rng = random.Random(int(unit.key[:16], 16) ^ self.spec.seed)
        started = time.perf_counter()
        metadata: dict[str, Any] = {
            "request": item.request,
            "intent": item.intent,
            "category": item.category,
            "probe": unit.probe,
            "converter": unit.converter,
            "item_id": item.id,
        }
        scores: dict[str, float | None] = {}
        rationales: dict[str, str] = {}
        error: str | None = None
        text = item.text
        try:
            text = self.converters[unit.converter].convert(item.text, rng)
            answers: list[dict[str, Any]] = []

            def send(messages: list[Message]) -> str:
                response = self.target.send(messages)
                answers.append(response.metadata)
                return response.text

            result = probe.attack(item, text, AttackContext(send, self.settings, rng))
            attempt = Attempt(
                prompt=text,
                response=result.response,
                conversation=result.conversation,
                metadata={**metadata, **result.metadata, "target": answers[-1] if answers else {}},
            )
        except BastionError as exc:
            error = exc.message
            attempt = Attempt(prompt=text, metadata=metadata)
        except Exception as exc:  # a plugin's own failure: recorded on the attempt, the run goes on
            error = f"{type(exc).__name__} in {unit.probe}/{unit.converter}: {exc}"
            attempt = Attempt(prompt=text, metadata=metadata)
        if error is None:
            detection = probe.detect(item, attempt.response or "")
            if detection is not None:
                scores["detector"] = detection.value
                rationales["detector"] = detection.rationale
            for name, scorer in self.scorers.items():
                try:
                    score = scorer.score(attempt)
                except BastionError as exc:
                    scores[name], rationales[name] = None, f"scorer failed: {exc.message}"
                    continue
                except Exception as exc:  # a scorer's own failure counts as undecided
                    scores[name], rationales[name] = None, f"scorer failed: {type(exc).__name__}: {exc}"
                    continue
                scores[name], rationales[name] = score.value, score.rationale
        attempt.verdict = verdict(item.intent, scores, error=error is not None)
        return {
            "key": unit.key,
            "seq": unit.seq,
            "probe": unit.probe,
            "converter": unit.converter,
            "category": item.category,
            "intent": item.intent,
            "item_id": item.id,
            "prompt": attempt.prompt,
            "conversation": [m.model_dump(exclude_none=True) for m in attempt.conversation],
            "response": attempt.response,
            "scores": scores,
            "rationales": rationales,
            "verdict": attempt.verdict,
            "error": error,
            "extra": {k: v for k, v in attempt.metadata.items() if k not in metadata or k == "request"},
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    def close(self) -> None:
        """Close the target and scorers."""
        self.target.close()
        for scorer in self.scorers.values():
            scorer.close()


_workers: dict[str, Worker] = {}
_workers_lock = threading.Lock()


def remote_job(payload: tuple[str, dict[str, Any], Unit]) -> dict[str, Any]:
    """Run one unit in a worker process or Ray task; the worker is built once per process."""
    spec_json, settings_data, unit = payload
    key = hashlib.sha256((spec_json + repr(sorted(settings_data.items()))).encode()).hexdigest()
    with _workers_lock:
        worker = _workers.get(key)
        if worker is None:
            settings = Settings.model_validate(settings_data)
            worker = Worker(CampaignSpec.model_validate_json(spec_json), settings)
            _workers[key] = worker
    return worker.run(unit)


ProgressHook = Callable[[int, int, dict[str, Any] | None], None]


class CampaignRunner:
    """Runs (or resumes) a campaign and stores each attempt as it completes."""

    def __init__(self, settings: Settings, db: Database, batch_size: int = 16, flush_s: float = 0.5) -> None:
        self.settings = settings
        self.db = db
        self.batch_size = batch_size
        self.flush_s = flush_s

    def create(self, spec: CampaignSpec, run_id: str | None = None, created_by: str = "cli") -> str:
        """Check every plugin, option and data file of `spec`, store a new run for it, return its id."""
        check(spec, self.settings)
        planned = len(plan(spec, self.settings))
        run_id = run_id or f"rt-{uuid.uuid4().hex[:12]}"
        with self.db.session() as s:
            if s.get(RedteamRunRow, run_id) is not None:
                raise ConfigError(
                    f"run {run_id} exists already; resume it with `bastion redteam resume {run_id}`"
                )
            s.add(
                RedteamRunRow(
                    id=run_id,
                    name=spec.name,
                    status="created",
                    spec=json.loads(spec.model_dump_json()),
                    spec_hash=spec.spec_hash(),
                    target=spec.target.type,
                    planned=planned,
                    completed=0,
                    created_by=created_by,
                )
            )
        return run_id

    def spec_of(self, run_id: str) -> CampaignSpec:
        """The stored spec of a run."""
        with self.db.session() as s:
            row = s.get(RedteamRunRow, run_id)
            if row is None:
                raise NotFound(f"no red-team run {run_id!r}")
            return CampaignSpec.model_validate(row.spec)

    def done_keys(self, run_id: str) -> set[str]:
        """Keys of the attempts already stored for a run."""
        with self.db.session() as s:
            return set(s.scalars(select(RedteamAttemptRow.key).where(RedteamAttemptRow.run_id == run_id)))

    def _store(self, run_id: str, rows: list[dict[str, Any]]) -> int:
        """Insert rows; a key already stored (a replayed attempt) is skipped. Returns rows added."""
        if not rows:
            return 0
        try:
            with self.db.session() as s:
                for row in rows:
                    s.add(RedteamAttemptRow(run_id=run_id, **row))
            return len(rows)
        except IntegrityError:
            added = 0
            for row in rows:
                try:
                    with self.db.session() as s:
                        s.add(RedteamAttemptRow(run_id=run_id, **row))
                    added += 1
                except IntegrityError:
                    pass
            return added

    def _set(self, run_id: str, **values: Any) -> None:
        with self.db.session() as s:
            row = s.get(RedteamRunRow, run_id)
            assert row is not None
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = datetime.now(UTC)

    def run(
        self, run_id: str, progress: ProgressHook | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """Run every planned attempt of `run_id` not stored yet; returns the run's summary.

        `limit` stops after that many new attempts (the run stays resumable).
        """
        from bastion.redteam.report import summarize

        spec = self.spec_of(run_id)
        data_hashes: dict[str, str] = {}
        units = plan(spec, self.settings, data_hashes)
        done = self.done_keys(run_id)
        todo = [u for u in units if u.key not in done]
        if limit is not None:
            todo = todo[:limit]
        self._set(run_id, status="running", planned=len(units), completed=len(done))
        completed = len(done)
        if progress:
            progress(completed, len(units), None)
        engine = build_engine(spec.engine)
        worker: Worker | None = None
        status = "interrupted"
        try:
            if engine.in_process:
                worker = Worker(spec, self.settings)
                results: Iterator[dict[str, Any]] = engine.map(worker.run, todo)
            else:
                spec_json = spec.model_dump_json()
                data = self.settings.model_dump()
                results = engine.map(remote_job, [(spec_json, data, u) for u in todo])
            pending: list[dict[str, Any]] = []
            last_flush = time.monotonic()
            for result in results:
                pending.append(result)
                if progress:
                    progress(completed + len(pending), len(units), result)
                if len(pending) >= self.batch_size or time.monotonic() - last_flush >= self.flush_s:
                    completed += self._store(run_id, pending)
                    pending = []
                    last_flush = time.monotonic()
                    self._set(run_id, completed=completed)
            completed += self._store(run_id, pending)
            status = "completed" if completed >= len(units) else "interrupted"
        finally:
            engine.close()
            if worker is not None:
                worker.close()
            finished = datetime.now(UTC) if status == "completed" else None
            self._set(run_id, status=status, completed=completed, finished_at=finished)
            if worker is not None:
                replay = worker.describe()
            else:  # remote engines: the plugins ran elsewhere; their specs as written
                replay = {"target": spec.target.model_dump(mode="json"), "engine": spec.engine.name}
            replay["data_sha256"] = data_hashes
            summary = summarize(self.db, run_id, replay=replay)
            self._set(run_id, summary=summary)
        return summary


def rescore(settings: Settings, db: Database, run_id: str) -> dict[str, Any]:
    """Score a run's stored responses again with its scorers as they are now (e.g. a retrained refusal
    classifier) and recompute every verdict; the probes' own detections are kept. Returns the summary."""
    from bastion.redteam.report import run_row, summarize

    spec = CampaignRunner(settings, db).spec_of(run_id)
    built = {s.name: build_scorer(s, settings) for s in spec.scorers}
    try:
        with db.session() as s:
            rows = s.scalars(select(RedteamAttemptRow).where(RedteamAttemptRow.run_id == run_id))
            for row in rows:
                if row.error is not None:
                    continue
                attempt = Attempt(
                    prompt=row.prompt,
                    response=row.response,
                    metadata={**row.extra, "intent": row.intent, "category": row.category},
                )
                scores: dict[str, float | None] = {}
                rationales: dict[str, str] = {}
                if "detector" in row.scores:
                    scores["detector"] = row.scores["detector"]
                    rationales["detector"] = row.rationales.get("detector", "")
                for name, scorer in built.items():
                    try:
                        score = scorer.score(attempt)
                        scores[name], rationales[name] = score.value, score.rationale
                    except BastionError as exc:
                        scores[name], rationales[name] = None, f"scorer failed: {exc.message}"
                row.scores = scores
                row.rationales = rationales
                row.verdict = verdict(row.intent, scores)
    finally:
        for scorer in built.values():
            scorer.close()
    previous = run_row(db, run_id).summary or {}
    replay = dict(previous.get("replay") or {})
    replay["scorers"] = {n: sc.describe() for n, sc in built.items()}
    summary = summarize(db, run_id, replay=replay)
    with db.session() as s:
        run = s.get(RedteamRunRow, run_id)
        assert run is not None
        run.summary = summary
        run.updated_at = datetime.now(UTC)
    return summary


def run_stats(db: Database, run_id: str) -> tuple[int, int]:
    """(attempts stored, distinct keys) of a run: equal when nothing was duplicated."""
    with db.session() as s:
        total = s.scalar(select(func.count()).where(RedteamAttemptRow.run_id == run_id)) or 0
        distinct = s.scalar(
            select(func.count(func.distinct(RedteamAttemptRow.key))).where(RedteamAttemptRow.run_id == run_id)
        )
        return int(total), int(distinct or 0)
